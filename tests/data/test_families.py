"""Generated task families written as a data source: a folder of ARC task JSON + labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arctax.cli import main
from arctax.data import families
from arctax.data.validate import validate_task


def test_the_test_rows_of_a_study():
    rows = families.test_rows(("flip", "gravity"))
    assert rows == {"flip": ("flip",), "gravity": ("gravity",),
                    "view_reachable": ("flip_ud", "gravity_up", "gravity_left", "gravity_right"),
                    "new_rule": ("colour_map",)}  # fmt: skip
    assert "new_rule" not in families.test_rows(("colour_map",))  # trained: a row of its own
    assert "view_reachable" not in families.test_rows(("swap",))
    with pytest.raises(ValueError, match="unknown rules \\['flop'\\]"):
        families.test_rows(("flop",))


def test_write_families_is_seeded_valid_and_follows_its_rules(tmp_path):
    rows = families.test_rows(("gravity",))
    counts = families.write_families(tmp_path / "a", {"gravity": 4}, rows, 3, hi=4)
    families.write_families(tmp_path / "b", {"gravity": 4}, rows, 3, hi=4)
    assert counts == {"train": 4, "test": 9}
    labels = json.loads((tmp_path / "a" / "labels.json").read_text())
    assert sorted(set(labels.values())) == ["gravity", "new_rule", "view_reachable"]
    for path in sorted((tmp_path / "a").rglob("*-*.json")):
        assert path.read_text() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_text()
        task = json.loads(path.read_text())
        validate_task(task, path.name, path.stem)
        pairs = [
            (np.array(p["input"]), np.array(p["output"])) for p in task["train"] + task["test"]
        ]
        assert all(max(x.shape) <= 4 for x, _ in pairs)
        if labels[path.stem] == "gravity":
            assert all(np.array_equal(families.RULES["gravity"](x), y) for x, y in pairs)
    other = families.write_families(tmp_path / "c", {"gravity": 4}, rows, 3, seed=5, hi=4)
    assert other == counts
    assert (tmp_path / "c/train/train-gravity-000.json").read_text() != (
        tmp_path / "a/train/train-gravity-000.json"
    ).read_text()


def test_cli_writes_a_data_source_and_refuses_an_unknown_rule(tmp_path, capsys):
    assert main(["families", "--out", str(tmp_path), "--rules", "flip", "--per-rule", "2",
                 "--per-row", "1"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out) == {"out": str(tmp_path), "train": 2, "test": 3}
    assert main(["families", "--out", str(tmp_path / "x"), "--rules", "flop"]) == 1
    assert "unknown rules ['flop']" in capsys.readouterr().err
