"""Reading a prepared split: plain arrays in, example dicts out (see ``collate``).

A prepared split may come from elsewhere (``--data DIR``), so it is read as data to check, not
trusted: :func:`read_npz` reads the npz's zip directory first (a regular file; at most
:data:`MAX_ARRAYS` members, none encrypted; declared sizes in all at most
:data:`MAX_INFLATION` times the file's size, or :data:`MIN_INFLATED_BYTES`: arctax's caches
compress about 10x) and each array's ``.npy`` header (plain dtypes only, its shape exactly the
bytes it holds) before allocating it; :func:`check_arrays` then range-checks every index and
offset (:class:`CacheError` naming the file and the field), so a query can never be scored
against another grid (a negative index would wrap) and no lookup can fail later.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from arctax.data.collate import MODEL_FORMAT
from arctax.data.validate import short
from arctax.io import ReadError, open_regular, read_json, unsafe_name

MAX_ARRAYS = 64  # a split has 16
MAX_INFLATION = 100  # declared bytes per byte of the file (measured: 9-13 for arctax's caches)
MIN_INFLATED_BYTES = 64 * 2**20  # a small file may always declare this much
MAX_GRID = 30  # grid sides are 1..30 (ARC)
FIX = "delete it and run the prepare step again"


class CacheError(FileNotFoundError):
    """The prepared data cache is missing or unreadable."""


def load_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of a prepared cache."""
    p = Path(data_dir) / "manifest.json"
    try:
        m = read_json(p, "prepared cache's manifest.json")
    except (OSError, ReadError) as e:
        raise CacheError(f"{p}: missing or unreadable ({e}); run the prepare step first") from e
    if not isinstance(m, dict):
        raise CacheError(f"{p}: not a cache manifest (a JSON object); run the prepare step again")
    return m


def _npy(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """One ``.npy`` member: its header read first, the array allocated only when the shape
    is exactly the bytes the member declares."""
    fmt = np.lib.format
    with z.open(info) as f:
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f, max_header_size=10_000)
        n = math.prod(shape) * dtype.itemsize
        if dtype.hasobject or fortran or n != info.file_size - f.tell():
            what = "Python objects" if dtype.hasobject else f"shape {shape} of {dtype}"
            raise CacheError(
                f"{where}: array '{info.filename[:-4]}' holds {what}, not "
                f"{info.file_size - f.tell()} bytes of plain C-order data; {FIX}"
            )
        out = np.empty(shape, dtype)
        if n and f.readinto(memoryview(out.reshape(-1)).cast("B")) != n:
            raise CacheError(f"{where}: array '{info.filename[:-4]}' is cut short; {FIX}")
    return out


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` from elsewhere, bounded before anything is allocated (see the
    module docstring); :class:`CacheError` naming the file otherwise."""
    where = str(path)
    try:
        with open_regular(path, "prepared split (.npz)") as raw, zipfile.ZipFile(raw) as z:
            infos = z.infolist()
            size = Path(path).stat().st_size
            total = sum(i.file_size for i in infos)
            bound = max(MIN_INFLATED_BYTES, MAX_INFLATION * size)
            bad = [i.filename for i in infos if not i.filename.endswith(".npy") or i.flag_bits & 1]
            names = [i.filename for i in infos]
            if len(infos) > MAX_ARRAYS or bad or len(set(names)) != len(names):
                why = f"{len(infos)} members" if len(infos) > MAX_ARRAYS else "a member that is "
                why += "" if len(infos) > MAX_ARRAYS else "not a plain .npy array, or twice"
                raise CacheError(f"{where}: not an arctax prepared split ({why}); {FIX}")
            if total > bound:
                raise CacheError(
                    f"{where}: its arrays declare {total} bytes from a {size}-byte file, over "
                    f"the {bound} it may hold ({MAX_INFLATION}x its size; a zip bomb?); {FIX}"
                )
            return {i.filename[:-4]: _npy(z, i, where) for i in infos}
    except CacheError:
        raise
    except FileNotFoundError as e:
        raise CacheError(f"{where}: missing prepared split ({e.strerror}); {FIX}") from None
    except (ReadError, OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as e:
        raise CacheError(f"{where}: missing or corrupt prepared split ({e}); {FIX}") from None


# field -> (dtype kinds, dimensions); sizes: G grids, N examples, T tasks, D demonstrations
FIELDS = {
    "cells": ("u", 1), "grid_offset": ("iu", 1), "grid_h": ("iu", 1), "grid_w": ("iu", 1),
    "ex_grids": ("iu", 2), "ex_task": ("iu", 1), "ex_pair": ("iu", 1), "ex_aug": ("iu", 1),
    "task_ids": ("U", 1), "task_category": ("U", 1),
}  # fmt: skip
DEMO_FIELDS = {"demo_task": ("iu", 1), "demo_pair": ("iu", 1), "demo_grids": ("iu", 2)}


def check_arrays(a: dict[str, np.ndarray], where: str) -> None:
    """Every field present with its kind and shape, every index and offset in range; one
    :class:`CacheError` naming ``where`` and the field otherwise."""

    def bad(field: str, what: str) -> CacheError:
        return CacheError(f"{where}: field '{field}' {what}; {FIX}")

    fields = FIELDS | (DEMO_FIELDS if any(k in a for k in DEMO_FIELDS) else {})
    for name, (kinds, ndim) in fields.items():
        if name not in a:
            raise bad(name, "is missing (not a split arctax prepared)")
        if a[name].dtype.kind not in kinds or a[name].ndim != ndim:
            raise bad(name, f"is {a[name].ndim}-D {a[name].dtype}, not {ndim}-D of kind {kinds}")
    g, n, t = len(a["grid_h"]), len(a["ex_task"]), len(a["task_ids"])
    sizes = {"grid_offset": g, "grid_w": g, "ex_grids": n, "ex_pair": n, "ex_aug": n}
    sizes |= {"task_category": t}
    if "demo_task" in a:
        sizes |= {"demo_pair": len(a["demo_task"]), "demo_grids": len(a["demo_task"])}
    for name, want in sizes.items():
        if len(a[name]) != want:
            raise bad(name, f"has {len(a[name])} rows, not {want}")
    width = a["ex_grids"].shape[1]
    if width < 2 or width % 2 or ("demo_grids" in a and a["demo_grids"].shape[1] != 2):
        raise bad("ex_grids" if width < 2 or width % 2 else "demo_grids", "has the wrong width")

    def in_range(name: str, values: np.ndarray, lo: int, hi: int) -> None:
        if values.size and (values.min() < lo or values.max() > hi):
            out = values[(values < lo) | (values > hi)][0]
            raise bad(name, f"holds {out}, outside {lo}..{hi}")

    h, w = a["grid_h"].astype(np.int64), a["grid_w"].astype(np.int64)
    in_range("grid_h", h, 1, MAX_GRID)
    in_range("grid_w", w, 1, MAX_GRID)
    in_range("grid_offset", a["grid_offset"], 0, len(a["cells"]))
    ends = a["grid_offset"].astype(np.int64) + h * w
    in_range("grid_offset", ends, 0, len(a["cells"]))  # every grid inside cells
    in_range("cells", a["cells"], 0, 9)
    in_range("ex_grids", a["ex_grids"][:, :2], 0, g - 1)  # the query pair is always there
    ctx = a["ex_grids"][:, 2:]
    in_range("ex_grids", ctx, -1, g - 1)  # -1: a missing context pair
    if ((ctx[:, 0::2] < 0) != (ctx[:, 1::2] < 0)).any():
        raise bad("ex_grids", "has a context pair with one grid missing")
    in_range("ex_task", a["ex_task"], 0, t - 1)
    for name in ("ex_pair", "ex_aug", "demo_pair"):
        if name in a:
            in_range(name, a[name], 0, np.iinfo(np.int64).max)
    if "demo_task" in a:
        in_range("demo_task", a["demo_task"], 0, t - 1)
        in_range("demo_grids", a["demo_grids"], 0, g - 1)
    ids = [str(x) for x in a["task_ids"]]
    if len(set(ids)) != len(ids):
        raise bad("task_ids", "names a task twice")


def grouping_key(lengths: np.ndarray) -> np.ndarray:
    """Sort key of token lengths: ``(N,)`` one padded sequence, ``(N, 2)`` source and target.

    Encoder-decoder formats pad source and target separately: sorting by the longer side,
    then the shorter, measured best on ARC-AGI-1 (vs 63% real tokens for ``s + t``).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim == 1:
        return lengths
    s, t = lengths[:, 0], lengths[:, 1]
    return np.maximum(s, t) * 10_000 + np.minimum(s, t)


class PreparedSplit(Dataset):
    """One split of the cache; ``ds[i]`` is an example dict for :func:`collate`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        a = read_npz(self.path)
        check_arrays(a, str(self.path))
        self.cells = a["cells"]
        self.offset = a["grid_offset"]
        self.h = a["grid_h"].astype(np.int64)
        self.w = a["grid_w"].astype(np.int64)
        self.ex_grids = a["ex_grids"]
        self.ex_task = a["ex_task"]
        self.ex_pair = a["ex_pair"]
        self.ex_aug = a["ex_aug"]
        self._demo = {k: a[k] for k in ("demo_task", "demo_pair", "demo_grids") if k in a}
        self.task_ids = [str(t) for t in a["task_ids"]]
        bad = next(((t, why) for t in self.task_ids if (why := unsafe_name(t))), None)
        if bad:  # task ids name files (adapters/<task_id>.pt): never a path from data
            raise CacheError(
                f"{self.path}: task id {short(bad[0])} cannot name a file ({bad[1]}); this "
                f"cache was not written by arctax prepare: {FIX}"
            )
        self.categories = [str(c) for c in a["task_category"]]
        self.k = (self.ex_grids.shape[1] - 2) // 2

    def __len__(self) -> int:
        return len(self.ex_task)

    def grid(self, g: int) -> np.ndarray:
        """Grid ``g`` as an int64 array."""
        o, h, w = self.offset[g], self.h[g], self.w[g]
        return self.cells[o : o + h * w].reshape(h, w).astype(np.int64)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids = self.ex_grids[i]
        context = [
            (self.grid(ids[j]), self.grid(ids[j + 1])) for j in range(2, len(ids), 2) if ids[j] >= 0
        ]
        return {
            "query_in": self.grid(ids[0]),
            "query_out": self.grid(ids[1]),
            "context": context,
            "task_idx": int(self.ex_task[i]),
            "example_idx": int(i),
        }

    def demos(self, task_idx: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """All demonstration pairs ``(input, output)`` of task ``task_idx``, in task-file order.

        For the test split these are the task's ``train`` pairs: test outputs are never here.
        """
        if len(self._demo) != 3:
            raise CacheError(
                f"{self.path}: prepared by an older arctax (no demonstration pairs); "
                "delete its folder and run the prepare step again"
            )
        rows = np.flatnonzero(self._demo["demo_task"] == task_idx)
        rows = rows[np.argsort(self._demo["demo_pair"][rows], kind="stable")]
        return [(self.grid(g[0]), self.grid(g[1])) for g in self._demo["demo_grids"][rows]]

    def meta(self, i: int) -> dict[str, Any]:
        """Task id, category, query pair index and augmentation copy of example ``i``."""
        t = int(self.ex_task[i])
        return {
            "task_id": self.task_ids[t],
            "category": self.categories[t],
            "pair": int(self.ex_pair[i]),
            "aug": int(self.ex_aug[i]),
        }

    def token_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Source and target token counts of every example (marker format)."""
        qi, qo = self.ex_grids[:, 0], self.ex_grids[:, 1]
        return self.h[qi] * (self.w[qi] + 1) + 1, self.h[qo] * (self.w[qo] + 1) + 1

    def lengths(self, fmt: str) -> np.ndarray:
        """Length-grouping sort key of every example in the model's batch format."""
        s, t = self.token_lengths()
        if MODEL_FORMAT.get(fmt, fmt) == "decoder_only":  # a format, or a built-in's name
            return grouping_key(s + t)
        return grouping_key(np.stack([s, t], axis=1))


def load_split(data_dir: str | Path, split: str) -> PreparedSplit:
    """Open ``<data_dir>/<split>.npz``."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; expected train, val or test")
    return PreparedSplit(Path(data_dir) / f"{split}.npz")


__all__ = [
    "MODEL_FORMAT",
    "CacheError",
    "PreparedSplit",
    "grouping_key",
    "load_manifest",
    "load_split",
]
