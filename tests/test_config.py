"""Config files are read under bounds (issue 36): a YAML overlay nested deep, a "billion
laughs" of aliases, a recursive anchor, a 5000-digit integer or a device file is one
ConfigError naming the file, in milliseconds; ``run`` is one folder name."""

from __future__ import annotations

import os

import pytest

from arctax.config import ConfigError, load_config, load_yaml, model_block_error, validate_config

LAUGHS = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n"
    for i in range(9)
)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a: " + "[" * 10**5 + "]" * 10**5, "nested deeper than 32 levels at line 1"),
        (
            "".join("  " * i + f"k{i}:\n" for i in range(40)) + "  " * 40 + "x: 1\n",
            "deeper than 32",
        ),
        (LAUGHS, "over 200000 values or 32 levels once its aliases are expanded"),
        ("a: &a [*a]\n", "an anchor that contains itself"),
        ("run: " + "9" * 5000 + "\n", "4300 digits"),
    ],
)
def test_a_hostile_overlay_is_one_line_naming_it(tmp_path, text, says):
    p = tmp_path / "overlay.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: ") and says in str(e.value) and "\n" not in str(e.value)


def test_anchors_a_config_may_use_still_load(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("base: &b {x: 1}\ncopy: *b\nmerged: {<<: *b, y: 2}\n")
    assert load_yaml(p) == {"base": {"x": 1}, "copy": {"x": 1}, "merged": {"x": 1, "y": 2}}


def test_a_device_or_a_fifo_is_not_a_config_file(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    for name, kind in (("fifo.yaml", "a named pipe"), ("zero.yaml", "a character device")):
        with pytest.raises(ConfigError, match=f"{name}: {kind}"):
            load_config(tmp_path / name)


@pytest.mark.parametrize("run", ["..", "."])
def test_run_must_be_one_folder_name(run):
    cfg = load_config()
    with pytest.raises(ConfigError, match=f"config key 'run': '{run}' cannot name the folder"):
        validate_config({**cfg, "run": run})
    validate_config({**cfg, "run": "a..b"})  # dots inside a name are fine


def test_a_model_block_is_checked_against_the_schema_generically():
    assert model_block_error("encoder_decoder", {"d_model": 16, "n_heads": 2,
           "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 8}) is None  # fmt: skip
    assert "d_model: -16 is less than the minimum" in model_block_error(
        "decoder_only", {"d_model": -16, "n_heads": 1, "n_layers": 1, "d_ff": 4}
    )
    assert "max_grid" in model_block_error(
        "decoder_only", {"d_model": 16, "n_heads": 1, "n_layers": 1, "d_ff": 4, "max_grid": 3000}
    )
    assert "context: 'd_model' is a required property" in model_block_error(
        "champion", {"d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
                     "d_ff": 8, "context": {"n_heads": 2}},
    )  # fmt: skip
    assert model_block_error("mine", {"anything": 1}) is None  # a class of one's own checks it
