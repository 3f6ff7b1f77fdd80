"""CLI argument handling: repeated --config, --set overrides, one-line errors with exit 2."""

import pytest

from arctax.cli import _overrides, main
from arctax.config import DEFAULT_CONFIG, ConfigError, load_config


def test_set_overrides_are_nested_yaml_values():
    o = _overrides(["trainer.max_epochs=3", "trial69.optimizer.betas=[0.9, 0.99]"])
    assert o == {"trainer": {"max_epochs": 3}, "trial69": {"optimizer": {"betas": [0.9, 0.99]}}}
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        _overrides(["trainer.max_epochs"])


def test_configs_merge_in_order_then_set_wins(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("trainer:\n  max_epochs: 3\n  num_workers: 1\n")
    b.write_text("trainer:\n  max_epochs: 5\n")
    cfg = load_config(DEFAULT_CONFIG, a, b)
    assert cfg["trainer"]["max_epochs"] == 5 and cfg["trainer"]["num_workers"] == 1
    cfg = load_config(DEFAULT_CONFIG, a, b, overrides=_overrides(["trainer.max_epochs=7"]))
    assert cfg["trainer"]["max_epochs"] == 7


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["--set", "trial69.bogus=1", "compare", "--eval", "a=b", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bogus" in err
    assert main(["compare", "--eval", "no-label", "--out", str(tmp_path)]) == 2
    assert "LABEL=DIR" in capsys.readouterr().err


def test_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"\x80 not a pickle")
    args = ["evaluate", "--checkpoint", str(bad), "--data", str(tmp_path), "--out", str(tmp_path)]
    assert main([*args, "--label", "x"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err and "corrupt" in err
    with pytest.raises(Exception, match="corrupt"):
        main(["--debug", *args, "--label", "x"])
    out = tmp_path / "model"
    assert main(["train", "--model", "transformer", "--data", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown model 'transformer'" in err


def test_a_bad_task_file_is_one_line(tmp_path, capsys):
    src = tmp_path / "tasks"
    src.mkdir()
    (src / "t1.json").write_text(
        '{"train": [{"input": [[1]], "output": [[2, 3], [4]]}], "test": []}'
    )
    out = tmp_path / "out"
    assert main(["--set", f"data.source={src}", "prepare", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "ragged rows" in err and "t1" in err
    assert not out.exists()  # a failed prepare leaves nothing behind


def test_inspect(tmp_path, capsys):
    p = tmp_path / "orig.ckpt"
    import torch

    torch.save({"state_dict": {"core_model.w": torch.zeros(1)}}, p)
    assert main(["inspect", str(p)]) == 1
    assert "original internal codebase" in capsys.readouterr().out


def test_an_overlay_alone_starts_from_config_yaml_as_snakemake_does(tmp_path, capsys):
    """`arctax --config config/demo.yaml prepare` used to say 'taxonomy' is a required property."""
    demo = DEFAULT_CONFIG.with_name("demo.yaml")
    assert load_config(demo) == load_config(DEFAULT_CONFIG, demo)
    out = tmp_path / "data"
    assert main(["--config", str(demo), "prepare", "--out", str(out)]) == 0, capsys.readouterr()
    assert (out / "manifest.json").is_file()


def test_train_keeps_its_resumable_state_inside_out(tmp_path, tiny_data):
    import yaml

    from tests.conftest import tiny_overrides

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_overrides(max_epochs=1, accelerator="cpu")))
    out = tmp_path / "runs" / "champion"
    args = ["--config", str(cfg), "train", "--model", "champion", "--data", str(tiny_data)]
    assert main([*args, "--out", str(out)]) == 0
    assert (out / ".state" / "last.ckpt").is_file() and (out / "best.ckpt").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["champion"]  # nothing beside


def test_check_is_the_workflows_check(capsys):
    """`arctax check` runs arctax.check.check, as the workflow does when it starts: the demo
    passes (its plan printed); a config the workflow refuses is refused with the same line."""
    from arctax.cli import main

    assert main(["--config", "config/demo.yaml", "check"]) == 0
    assert "config OK: run demo" in capsys.readouterr().out
    assert main(["--set", "trainer.devices=3", "check"]) == 2
    assert "trainer.devices: 3 cannot split trial69.batch_size" in capsys.readouterr().err
