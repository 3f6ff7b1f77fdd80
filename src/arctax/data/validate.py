"""Validation of ARC task JSON: one clear error naming file, task, pair and problem."""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np


class InvalidTaskError(ValueError):
    """A task file or object is malformed; the message says where and what."""


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxlong = 2, 4, 4, 100, 40


def short(value: Any) -> str:
    """A short ``repr`` of a value from a file (nested or long ones cut): one line, never
    the size of the file."""
    return _SHORT.repr(value)


def plain(name: Any) -> str:
    """A name from a file (a task id) as it is when it is short and printable, else as
    :func:`short` quotes it: one line either way."""
    ok = isinstance(name, str) and name.isprintable() and len(name) <= 100
    return name if ok else short(name)


def validate_grid(grid: Any, where: str, max_grid: int = 30) -> np.ndarray:
    """Return ``grid`` as a uint8 array or raise naming ``where`` and the problem."""
    if not isinstance(grid, list) or not grid:
        raise InvalidTaskError(f"{where}: grid must be a non-empty list of rows")
    if not all(isinstance(r, list) for r in grid):
        raise InvalidTaskError(f"{where}: every row must be a list of integers")
    widths = {len(r) for r in grid}
    if len(widths) != 1:
        raise InvalidTaskError(f"{where}: ragged rows (row lengths {sorted(widths)})")
    h, w = len(grid), widths.pop()
    if not (1 <= h <= max_grid and 1 <= w <= max_grid):
        raise InvalidTaskError(f"{where}: dimension {h}x{w} outside 1..{max_grid}")
    for r in grid:  # per row at C speed (re-arc sources hold tens of thousands of grids)
        if set(map(type, r)) != {int} or min(r) < 0 or max(r) > 9:
            bad = next(v for v in r if type(v) is not int or not 0 <= v <= 9)
            raise InvalidTaskError(f"{where}: colour {short(bad)} outside 0..9")
    return np.array(grid, dtype=np.uint8)


def validate_task(
    obj: Any, origin: str, task_id: str, max_grid: int = 30
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """Validate one task object; return its ``(train, test)`` pairs as arrays."""
    head = f"{origin}: task {task_id}"
    if not isinstance(obj, dict):
        raise InvalidTaskError(f"{head}: top level must be an object with 'train' and 'test'")
    out = []
    for key in ("train", "test"):
        if key not in obj:
            raise InvalidTaskError(f"{head}: missing key '{key}'")
        if not isinstance(obj[key], list):
            raise InvalidTaskError(f"{head}: '{key}' must be a list of pairs")
        pairs = []
        for i, pair in enumerate(obj[key]):
            where = f"{head}: {key} pair {i}"
            if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
                raise InvalidTaskError(f"{where}: missing key 'input' or 'output'")
            pairs.append(
                (
                    validate_grid(pair["input"], f"{where} input", max_grid),
                    validate_grid(pair["output"], f"{where} output", max_grid),
                )
            )
        out.append(pairs)
    if not out[0] and not out[1]:
        raise InvalidTaskError(f"{head}: task has no pairs")
    if not out[0]:
        # Without demonstrations a test task cannot be answered (nor adapted to) and a
        # training task has nothing to learn from its test pairs alone: refuse it rather than
        # let it vanish from the split.
        raise InvalidTaskError(
            f"{head}: 'train' has no pairs (a task needs at least one demonstration pair; "
            "its 'test' pairs alone cannot be used)"
        )
    return out[0], out[1]
