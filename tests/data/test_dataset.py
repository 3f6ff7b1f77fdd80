"""Reading a prepared split: a cache from elsewhere never gives a task id that is a path."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from arctax.data.dataset import CacheError, load_split
from arctax.io import unsafe_name


@pytest.mark.parametrize("bad", ["../../../tmp/x", "a/b", "..", "", "a\\b"])
def test_a_cache_whose_task_id_is_a_path_is_refused(tiny_data, tmp_path, bad):
    d = tmp_path / "data"
    shutil.copytree(tiny_data, d)
    with np.load(d / "test.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert len(load_split(d, "test").task_ids) == len(arrays["task_ids"])  # as prepared: fine
    ids = arrays["task_ids"].astype(object)
    ids[0] = bad
    arrays["task_ids"] = ids.astype(str)
    np.savez(d / "test.npz", **arrays)
    with pytest.raises(CacheError) as e:
        load_split(d, "test")
    assert str(d / "test.npz") in str(e.value) and repr(bad) in str(e.value)
    assert "cannot name a file" in str(e.value)


def test_unsafe_name():
    assert unsafe_name("007bbfb7") is None and unsafe_name("my task.v2") is None
    assert all(unsafe_name(n) for n in ("", ".", "..", "a/b", "a\\b", "a\0b"))
