"""Answers in the ARC Prize submission format, and the one scorer every answer goes through.

The format (``submission.json``)::

    {"<task_id>": [{"attempt_1": grid, "attempt_2": grid}, ...], ...}

one dict per test input of the task, in the task's test order; a grid is a list of rows of
colours 0..9. arctax writes ``[]`` for "no answer" (a malformed generated grid, or a test input
left out by ``data.max_cells``): it is never a valid grid, so it never scores. A model that made
one attempt repeats it as ``attempt_2``.

Every evaluation writes its answers in this format and is scored by :func:`score_submission`
from it, so a reference's answers from any system (``champion.predictions``) are scored by
exactly the same code as arctax's own models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arctax.data.validate import InvalidTaskError, plain, short, validate_grid
from arctax.io import ReadError, read_json

Grid = np.ndarray
ATTEMPT_KEYS = ("attempt_1", "attempt_2")
SCORE_COLUMNS = [
    "model", "seed", "task_id", "category", "query", "gen_shape", "target_shape",
    "shape_correct", "grid_correct", "grid_correct_first", "cell_acc", "attempts",
]  # fmt: skip


class SubmissionError(ValueError):
    """A submission file is malformed or does not cover the test split; names file and fix."""


def score(pred: Grid | None, target: Grid) -> tuple[bool, bool, float]:
    """``(shape_correct, grid_correct, cell_acc)``; cell accuracy is 0 when the shape is wrong."""
    if pred is None or pred.shape != target.shape:
        return False, False, 0.0
    same = pred == target
    return True, bool(same.all()), float(same.mean())


def as_grid(value: Any, where: str) -> Grid | None:
    """A submitted grid as an array; ``None`` for no answer (``[]`` or ``null``)."""
    if value is None or (isinstance(value, list) and not value):
        return None
    try:
        return validate_grid(value, where)  # the task files' own rules: 1..30 per side, 0..9
    except InvalidTaskError as e:
        raise SubmissionError(f"{e} (or [] for no answer)") from e


def parse_submission(obj: Any, origin: str) -> dict[str, list[list[Grid | None]]]:
    """Validate a submission object: ``{task_id: [[attempt_1, attempt_2], ...]}`` as arrays."""
    fix = "see docs/REFERENCE.md for the ARC Prize submission format"
    if not isinstance(obj, dict):
        raise SubmissionError(f"{origin}: top level must be an object {{task_id: [...]}}; {fix}")
    out: dict[str, list[list[Grid | None]]] = {}
    for task_id, inputs in obj.items():
        if not isinstance(inputs, list) or not inputs:
            raise SubmissionError(
                f"{origin}: task {plain(task_id)}: expected a non-empty list with one "
                f"{{'attempt_1': grid, 'attempt_2': grid}} per test input; {fix}"
            )
        answers = []
        for i, entry in enumerate(inputs):
            where = f"{origin}: task {plain(task_id)} test input {i}"
            if not isinstance(entry, dict) or "attempt_1" not in entry:
                raise SubmissionError(f"{where}: expected an object with 'attempt_1'; {fix}")
            extra = sorted(set(entry) - set(ATTEMPT_KEYS))
            if extra:
                raise SubmissionError(f"{where}: unknown keys {short(extra)}; {fix}")
            answers.append([as_grid(entry.get(k), f"{where} {k}") for k in ATTEMPT_KEYS])
        out[str(task_id)] = answers
    return out


def read_submission(path: str | Path) -> dict[str, list[list[Grid | None]]]:
    """Read and validate a ``submission.json``; one :class:`SubmissionError` for any problem.

    A file from elsewhere: a regular file (never a device or a FIFO, which would never end),
    at most :data:`arctax.io.MAX_JSON_BYTES`, parsed under :func:`arctax.io.loads_json`'s
    depth and memory bounds."""
    p = Path(path)
    try:
        obj = read_json(p, "predictions file (submission.json)")
    except FileNotFoundError as e:
        raise SubmissionError(f"{p}: predictions file not found; check the path") from e
    except ReadError as e:
        raise SubmissionError(str(e)) from None
    except OSError as e:
        raise SubmissionError(f"{p}: not a readable file ({e})") from e
    return parse_submission(obj, str(p))


def _as_list(g: Grid | None) -> list:
    """A grid as rows; ``[]`` for none, and for a generated grid no ARC task can have (> 30)."""
    if g is None or max(np.shape(g)) > 30:
        return []
    return np.asarray(g).tolist()


def to_submission(answers: Mapping[str, Mapping[int, Sequence[Grid | None]]]) -> dict[str, list]:
    """``{task_id: {test input index: [attempts]}}`` -> the submission object.

    Inputs without an answer (left out of the test split) get ``[]``; a single attempt is
    repeated as ``attempt_2``.
    """
    sub: dict[str, list] = {}
    for task_id in sorted(answers):
        by_index = answers[task_id]
        entries = []
        for i in range(max(by_index) + 1):
            attempts = list(by_index.get(i, [None]))
            if len(attempts) == 1:
                attempts = attempts * 2
            entries.append({k: _as_list(g) for k, g in zip(ATTEMPT_KEYS, attempts, strict=False)})
        sub[task_id] = entries
    return sub


def select(
    sub: Mapping[str, list[list[Grid | None]]],
    ds: Any,
    origin: str,
    tasks: set[str] | None = None,
) -> dict[int, list[Grid | None]]:
    """The submitted attempts of every original test query of ``ds``, by example index.

    Every test task (of ``tasks``, when given) must be in the submission with an entry for
    each of its test inputs; other tasks are ignored (a file for all 400 tasks scores a subset).
    """
    idx = np.flatnonzero(ds.ex_aug == 0)
    if tasks is not None:
        idx = np.array([i for i in idx if ds.meta(int(i))["task_id"] in tasks], dtype=np.int64)
    missing = sorted({ds.meta(int(i))["task_id"] for i in idx} - set(sub))
    if missing:
        raise SubmissionError(
            f"{origin}: no answers for {len(missing)} of the test split's tasks "
            f"(e.g. {', '.join(missing[:5])}); the predictions must cover the prepared test "
            "set (results/<run>/data/test/<test set>/manifest.json, splits.test)"
        )
    _check_counts(sub, ds, origin)
    out = {}
    for i in map(int, idx):
        m = ds.meta(i)
        entries = sub[m["task_id"]]
        if m["pair"] >= len(entries):
            raise SubmissionError(
                f"{origin}: task {m['task_id']} has {len(entries)} answer(s) but test input "
                f"{m['pair']} exists; give one entry per test input, in test order"
            )
        out[i] = entries[m["pair"]]
    return out


def _check_counts(sub: Mapping[str, list], ds: Any, origin: str) -> None:
    """A test task of ``ds`` in the submission has exactly one entry per test input: more
    entries are answers to inputs that do not exist (another task's, or a shifted list)."""
    n_inputs: dict[str, int] = {}
    for i in map(int, np.flatnonzero(ds.ex_aug == 0)):
        m = ds.meta(i)
        n_inputs[m["task_id"]] = max(n_inputs.get(m["task_id"], 0), m["pair"] + 1)
    for task_id, n in sorted(n_inputs.items()):
        got = len(sub.get(task_id, ()))
        if got > n:
            raise SubmissionError(
                f"{origin}: task {task_id} has {got} answer entries but {n} test input(s); give "
                "one entry per test input, in test order"
            )


def score_submission(
    sub: Mapping[str, list[list[Grid | None]]],
    ds: Any,
    attempts: int,
    label: str,
    seed: int | None,
    origin: str = "submission",
    tasks: set[str] | None = None,
) -> pd.DataFrame:
    """Score a parsed submission on the test split ``ds``: one row per test query.

    With ``attempts`` 1 only ``attempt_1`` counts; with 2 a query is solved when either is
    exact (ARC's pass@2). ``gen_shape`` is the shape of the counted attempt. ``tasks``
    restricts the scoring to those test tasks (an adaptation run on a subset).
    """
    if attempts not in (1, 2):
        raise ValueError(f"config key 'eval.attempts' must be 1 or 2, got {attempts}")
    rows = []
    for i, answers in select(sub, ds, origin, tasks).items():
        meta, target = ds.meta(i), ds[i]["query_out"]
        scores = [score(g, target) for g in answers[:attempts]]
        best = max(range(len(scores)), key=lambda a: scores[a][1])  # any exact attempt wins
        shape_ok, grid_ok, cell = scores[best]
        g = answers[best]
        rows.append({
            "model": label, "seed": seed, "task_id": meta["task_id"],
            "category": meta["category"], "query": meta["pair"],
            "gen_shape": "none" if g is None else f"{g.shape[0]}x{g.shape[1]}",
            "target_shape": f"{target.shape[0]}x{target.shape[1]}",
            "shape_correct": shape_ok, "grid_correct": grid_ok,
            "grid_correct_first": scores[0][1], "cell_acc": cell, "attempts": attempts,
        })  # fmt: skip
    table = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    return table.sort_values(["task_id", "query"], kind="stable").reset_index(drop=True)
