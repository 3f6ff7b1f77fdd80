"""The ARC Prize submission format: validation with one clear error, writing, and scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arctax.data.dataset import load_split
from arctax.evaluation.submission import (
    SubmissionError,
    parse_submission,
    read_submission,
    score,
    score_submission,
    select,
    to_submission,
)
from arctax.settings import load_settings
from tests.conftest import prepared

SMALL = {"data": {"max_tasks": 30, "max_cells": 64}}  # includes tasks with two test inputs


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    prepared(load_settings(overrides=SMALL), d)
    return load_split(d, "test")


def _truth(ds) -> dict:
    """A submission with every answer right (attempt_1) and wrong (attempt_2)."""
    answers: dict = {}
    for i in np.flatnonzero(ds.ex_aug == 0):
        m, out = ds.meta(int(i)), ds[int(i)]["query_out"]
        answers.setdefault(m["task_id"], {})[m["pair"]] = [out, (out + 1) % 10]
    return to_submission(answers)


def test_score():
    t = np.array([[1, 2], [3, 4]])
    assert score(t.copy(), t) == (True, True, 1.0)
    assert score(np.array([[1, 2], [3, 0]]), t) == (True, False, 0.75)
    assert score(None, t) == (False, False, 0.0)


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ([], "top level must be an object"),
        ({"t1": []}, "task t1: expected a non-empty list"),
        (
            {"t1": [{"attempt_2": [[1]]}]},
            "task t1 test input 0: expected an object with 'attempt_1'",
        ),
        ({"t1": [{"attempt_1": [[1]], "attempt_3": [[1]]}]}, "unknown keys"),
        ({"t1": [{"attempt_1": [[1, 2], [3]]}]}, "test input 0 attempt_1: ragged rows"),
        ({"t1": [{"attempt_1": [[1, 12]]}]}, "colour 12 outside 0..9"),
        ({"t1": [{"attempt_1": [[1]]}, {"attempt_1": "[[1]]"}]}, "test input 1 attempt_1"),
        ({"t1": [{"attempt_1": [[0] * 31]}]}, "1x31 outside 1..30"),
    ],
)
def test_malformed_submissions_name_task_input_and_attempt(obj, fragment):
    with pytest.raises(SubmissionError, match=fragment.replace("[", r"\[").replace("(", r"\(")):
        parse_submission(obj, "sub.json")


def test_files_that_are_not_json(tmp_path):
    with pytest.raises(SubmissionError, match="not found"):
        read_submission(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SubmissionError, match=f"{bad}: not valid JSON"):
        read_submission(bad)


def test_no_answer_and_one_attempt():
    sub = to_submission({"t": {0: [None], 2: [np.array([[1]])], 3: [np.zeros((1, 40))]}})
    assert sub["t"][0] == {"attempt_1": [], "attempt_2": []}
    assert sub["t"][1] == {"attempt_1": [], "attempt_2": []}  # a gap: input left out
    assert sub["t"][2] == {"attempt_1": [[1]], "attempt_2": [[1]]}  # repeated
    assert sub["t"][3]["attempt_1"] == []  # wider than any ARC grid: no answer
    parsed = parse_submission(json.loads(json.dumps(sub)), "x")
    assert parsed["t"][0] == [None, None] and np.array_equal(parsed["t"][2][0], [[1]])


def test_scoring_pass_at_1_and_2(test_split):
    sub = parse_submission(_truth(test_split), "truth")
    one = score_submission(sub, test_split, 1, "m", 3)
    assert one["grid_correct"].all() and one["grid_correct_first"].all()
    swapped = {t: [[a[1], a[0]] for a in v] for t, v in sub.items()}
    s1 = score_submission(swapped, test_split, 1, "m", 3)
    s2 = score_submission(swapped, test_split, 2, "m", 3)
    assert not s1["grid_correct"].any() and s2["grid_correct"].all()
    assert not s2["grid_correct_first"].any()  # the first attempt is still recorded as wrong
    n = int((test_split.ex_aug == 0).sum())
    assert len(one) == n and list(one["task_id"]) == sorted(one["task_id"])


def test_missing_tasks_are_an_error_and_extra_tasks_are_ignored(test_split):
    sub = parse_submission(_truth(test_split), "truth")
    extra = {**sub, "ffffffff": [[np.array([[1]]), None]]}
    assert len(select(extra, test_split, "x")) == int((test_split.ex_aug == 0).sum())
    first = sorted(sub)[0]
    del sub[first]
    with pytest.raises(SubmissionError, match=f"no answers for 1 .*{first}"):
        score_submission(sub, test_split, 1, "m", None, "preds.json")
    short = parse_submission(_truth(test_split), "truth")
    multi = [t for t, v in short.items() if len(v) > 1]
    assert multi, "the fixture must hold a task with two test inputs"
    short[multi[0]] = short[multi[0]][:1]
    with pytest.raises(SubmissionError, match=f"task {multi[0]} has 1 answer"):
        select(short, test_split, "x")


def test_more_entries_than_test_inputs_is_an_error_naming_both_counts(test_split):
    extra = parse_submission(_truth(test_split), "truth")
    task = sorted(extra)[0]
    n = len(extra[task])
    extra[task] = [*extra[task], extra[task][0]]
    with pytest.raises(SubmissionError, match=f"task {task} has {n + 1} answer entries but {n}"):
        score_submission(extra, test_split, 2, "m", None, "preds.json")


def test_a_hostile_submission_chooses_no_task_and_no_path(test_split):
    """Task ids in a submission only look answers up: a path-like id is ignored, never opened
    or written; an oversized grid is refused."""
    with pytest.raises(SubmissionError, match=r"task \.\./\.\./x test input 0 attempt_1"):
        parse_submission({"../../x": [{"attempt_1": [[0] * 31] * 31}]}, "evil.json")
    sub = parse_submission(_truth(test_split), "truth")
    evil = {**sub, "../../etc/passwd": [[np.array([[1]]), None]]}
    assert select(evil, test_split, "x").keys() == select(sub, test_split, "x").keys()
