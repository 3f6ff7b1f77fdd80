"""Every kind of bad task file ends in one error naming file, task, pair and problem."""

import json

import pytest

from arctax.data.prepare import prepare
from arctax.data.sources import load_source
from arctax.data.validate import InvalidTaskError
from arctax.settings import load_settings

GOOD = {
    "train": [{"input": [[1, 0]], "output": [[0, 1]]}],
    "test": [{"input": [[2]], "output": [[3]]}],
}


def write(dir_, name, obj):
    p = dir_ / f"{name}.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


@pytest.mark.parametrize(
    ("obj", "fragments"),
    [
        ("{not json", ["not valid JSON"]),
        ({"train": []}, ["missing key 'test'"]),
        ({"train": [{"input": [[1]]}], "test": []}, ["train pair 0", "missing key"]),
        (
            {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []},
            ["train pair 0 input", "ragged"],
        ),
        (
            {"train": [{"input": [[1] * 31], "output": [[1]]}], "test": []},
            ["dimension 1x31", "1..30"],
        ),
        (
            {"train": [], "test": [{"input": [[1]], "output": [[12]]}]},
            ["test pair 0 output", "colour 12"],
        ),
        ({"train": [], "test": [{"input": [[1.5]], "output": [[1]]}]}, ["colour 1.5"]),
        ({"train": [], "test": []}, ["no pairs"]),
        ({"train": [], "test": [{"input": [[1]], "output": [[2]]}]}, ["'train' has no pairs"]),
        ({"train": [{"input": [], "output": [[1]]}], "test": []}, ["non-empty"]),
    ],
)
def test_each_error_names_file_task_pair_problem(tmp_path, obj, fragments):
    write(tmp_path, "good1", GOOD)
    bad = write(tmp_path, "bad1", obj)
    with pytest.raises(InvalidTaskError) as e:
        load_source(str(tmp_path))
    msg = str(e.value)
    assert str(bad) in msg and "bad1" in msg
    for f in fragments:
        assert f in msg


def test_skip_mode_keeps_going_and_lists_ids(tmp_path, caplog):
    write(tmp_path, "good1", GOOD)
    write(tmp_path, "bad1", {"train": []})
    write(tmp_path, "bad2", "{")
    src = load_source(str(tmp_path), on_invalid="skip")
    assert [t.task_id for t in src.tasks] == ["good1"]
    assert sorted(src.skipped) == ["bad1", "bad2"]
    assert "skipped 1 invalid tasks: bad1" in caplog.text
    assert "skipped 1 unreadable task files: bad2" in caplog.text


def test_duplicate_task_ids_across_sources(tmp_path):
    # an ARC-AGI-1 evaluation id placed in the training directory collides with the test split
    write(tmp_path, "00576224", GOOD)
    write(tmp_path, "good1", GOOD)
    cfg = load_settings(overrides={"data": {"source": str(tmp_path)}})
    with pytest.raises(InvalidTaskError, match="duplicate task id '00576224'"):
        prepare(cfg.data, cfg.taxonomy, tmp_path / "out")


def test_unknown_source_is_one_clear_error():
    with pytest.raises(InvalidTaskError, match=r"data\.source"):
        load_source("/no/such/dir")


def test_a_task_without_demonstrations_is_refused_or_skipped_and_listed(tmp_path):
    """It used to be accepted, then silently dropped from the split it belonged to."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        write(src, f"good{i}", {"train": GOOD["train"] * 3, "test": GOOD["test"]})
    bad = write(src, "nodemos", {"train": [], "test": GOOD["test"]})
    cfg = load_settings(overrides={"data": {"source": str(src), "test_source": "held_out",
                                          "test_fraction": 0.25}})  # fmt: skip
    with pytest.raises(InvalidTaskError, match="'train' has no pairs") as e:
        prepare(cfg.data, cfg.taxonomy, tmp_path / "out")
    assert str(bad) in str(e.value) and "data.on_invalid: skip" in str(e.value)
    m = prepare(cfg.data.replace(on_invalid="skip"), cfg.taxonomy, tmp_path / "out")
    assert m["skipped_invalid"] == ["nodemos"] and m["unusable_after_filter"] == []
    assert "nodemos" not in [t for s in m["splits"].values() for t in s]
