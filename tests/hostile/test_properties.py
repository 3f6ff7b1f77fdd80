"""Issue 36, property-based: for ANY input of the shapes a hostile file can take, the bounded
readers either return what the plain parser would, or refuse in their own one-line error;
never another exception, never an index out of range."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from arctax.data.dataset import CacheError, PreparedSplit
from arctax.data.validate import InvalidTaskError, validate_grid
from arctax.evaluation.submission import SubmissionError, parse_submission
from arctax.io import ReadError, json_too_deep, loads_json

FAST = settings(max_examples=200, deadline=None, derandomize=True)
# strings with the characters a bracket counter could trip on
TEXT = st.text(alphabet=st.sampled_from('[]{}",\\:ab \n\u00e9\U0001f600'), max_size=8)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSON = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
    max_leaves=30,
)


def depth(v) -> int:
    if isinstance(v, list):
        return 1 + max(map(depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(depth, v.values()), default=0)
    return 0


def nest(v, n: int):
    for i in range(n):
        v = [v] if i % 2 else {"k]": v}
    return v


@FAST
@given(JSON, st.integers(0, 12), st.integers(1, 10))
def test_depth_is_counted_exactly_whatever_the_strings_hold(value, extra, limit):
    v = nest(value, extra)
    assert json_too_deep(json.dumps(v).encode(), limit) == (depth(v) > limit)


@FAST
@given(JSON, st.integers(0, 40))
def test_loads_json_is_json_loads_within_its_bounds(value, extra):
    v = nest(value, extra)
    data = json.dumps(v, ensure_ascii=False).encode()
    if depth(v) > 32:
        with pytest.raises(ReadError, match="nested deeper than 32"):
            loads_json(data, "x.json")
    else:
        assert loads_json(data, "x.json") == json.loads(data)


@FAST
@given(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()[:-1]))
def test_any_bytes_are_a_value_or_one_read_error(data):
    try:
        loads_json(data, "x.json")
    except ReadError as e:
        assert str(e).startswith("x.json: ") and "\n" not in str(e)


@FAST
@given(JSON)
def test_any_submission_shape_is_parsed_or_refused_in_one_line(obj):
    try:
        parse_submission(obj, "sub.json")
    except SubmissionError as e:
        assert str(e).startswith("sub.json") and "\n" not in str(e)


CELLS = st.integers(-2, 11) | st.booleans() | st.floats(0, 9) | st.just("1") | st.none()
GRIDS = st.lists(st.lists(CELLS, max_size=32), max_size=32) | JSON


@FAST
@given(GRIDS)
def test_any_grid_is_a_valid_array_or_one_error(grid):
    try:
        g = validate_grid(grid, "t.json: x")
    except InvalidTaskError as e:
        assert str(e).startswith("t.json: x") and "\n" not in str(e)
        return
    assert g.dtype == np.uint8 and 1 <= min(g.shape) <= max(g.shape) <= 30 and g.max() <= 9


INDEX_FIELDS = ["ex_grids", "ex_task", "grid_offset", "grid_h", "grid_w", "demo_task",
                "demo_grids", "ex_pair", "ex_aug", "cells"]  # fmt: skip


@pytest.fixture(scope="module")
def test_arrays(tiny_data):
    with np.load(tiny_data / "test.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.sampled_from(INDEX_FIELDS), st.integers(0, 10**6), st.integers(-(2**40), 2**40))
def test_a_mutated_cache_is_refused_or_every_lookup_is_in_range(
    test_arrays, tmp_path_factory, field, at, value
):
    """Whatever one index or offset becomes, the cache is refused naming the field, or every
    example and every demonstration reads grids that lie inside ``cells`` (no wrap-around)."""
    a = {k: v.copy() for k, v in test_arrays.items()}
    flat = a[field].reshape(-1)
    assume(flat.size > 0)
    info = np.iinfo(flat.dtype)
    flat[at % flat.size] = np.clip(value, info.min, info.max)
    path = tmp_path_factory.mktemp("c") / "test.npz"
    np.savez(path, **a)
    try:
        ds = PreparedSplit(path)
    except CacheError as e:
        assert "field '" in str(e) and str(path) in str(e) and "\n" not in str(e)
        return
    n_grids, n_cells = len(ds.h), len(ds.cells)

    def inside(g) -> None:  # Python ints: a negative index must not wrap around unseen
        g = int(g)
        assert 0 <= g < n_grids
        off, size = int(ds.offset[g]), int(ds.h[g]) * int(ds.w[g])
        assert off >= 0 and off + size <= n_cells and 1 <= size <= 900

    for i in range(len(ds)):
        ids = [int(x) for x in ds.ex_grids[i]]
        for g in ids[:2] + [x for x in ids[2:] if x >= 0]:
            inside(g)
        assert 0 <= int(ds.ex_task[i]) < len(ds.task_ids)
        ds[i]
    for t in range(len(ds.task_ids)):
        for g in ds._demo["demo_grids"][ds._demo["demo_task"] == t].reshape(-1):
            inside(g)
        ds.demos(t)
