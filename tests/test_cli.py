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
