"""Building the cache's splits: examples as flat arrays, written atomically with a manifest.

Shared by the training data (:mod:`arctax.data.prepare`) and the test sets
(:mod:`arctax.data.prepare_test`). Layout of the arrays: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import shutil
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from arctax.data.augment import Augmentation, random_augmentation
from arctax.data.sources import Task
from arctax.data.splits import UNLABELLED
from arctax.io import atomic_write, file_sha256, write_json
from arctax.settings import Data

CACHE_FORMAT = 3  # 2: demonstration pairs stored (demo_*); 3: test sets in folders of their own


class Builder:
    """Accumulates grids and examples of one split into flat arrays."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.cells: list[np.ndarray] = []
        self.offsets: list[int] = []
        self.shapes: list[tuple[int, int]] = []
        self.n_cells = 0
        self.rows: list[dict[str, Any]] = []
        self.task_ids: list[str] = []
        self.categories: list[str] = []
        self.demos: list[tuple[int, int, int, int]] = []  # (task, pair, input grid, output grid)

    def grid(self, g: np.ndarray) -> int:
        self.offsets.append(self.n_cells)
        self.shapes.append(g.shape)
        self.cells.append(g.reshape(-1).astype(np.uint8))
        self.n_cells += g.size
        return len(self.shapes) - 1

    def example(self, task_idx: int, pair: int, query, context, aug: Augmentation, copy: int):
        ids = [self.grid(aug.apply(query[0])), self.grid(aug.apply(query[1]))]
        for c in context:
            ids += [self.grid(aug.apply(c[0])), self.grid(aug.apply(c[1]))]
        ids += [-1] * (2 + 2 * self.k - len(ids))
        self.rows.append(
            dict(grids=ids, task=task_idx, pair=pair, aug=copy, dih=aug.dihedral, perm=aug.perm)
        )

    def demo(self, task_idx: int, pair: int, grids: tuple[np.ndarray, np.ndarray]) -> None:
        """Record one demonstration pair of a task (what test-time adaptation may train on)."""
        self.demos.append((task_idx, pair, self.grid(grids[0]), self.grid(grids[1])))

    def arrays(self) -> dict[str, np.ndarray]:
        r = self.rows
        d = np.array(self.demos, dtype=np.int64).reshape(len(self.demos), 4)
        return {
            "cells": np.concatenate(self.cells) if self.cells else np.zeros(0, np.uint8),
            "grid_offset": np.array(self.offsets, dtype=np.int64),
            "grid_h": np.array([s[0] for s in self.shapes], dtype=np.uint8),
            "grid_w": np.array([s[1] for s in self.shapes], dtype=np.uint8),
            "ex_grids": np.array([x["grids"] for x in r], dtype=np.int32).reshape(
                len(r), 2 + 2 * self.k
            ),
            "ex_task": np.array([x["task"] for x in r], dtype=np.int32),
            "ex_pair": np.array([x["pair"] for x in r], dtype=np.int16),
            "ex_aug": np.array([x["aug"] for x in r], dtype=np.int16),
            "ex_dihedral": np.array([x["dih"] for x in r], dtype=np.uint8),
            "ex_perm": np.array([x["perm"] for x in r], dtype=np.uint8).reshape(len(r), 10),
            "demo_task": d[:, 0].astype(np.int32),
            "demo_pair": d[:, 1].astype(np.int16),
            "demo_grids": d[:, 2:].astype(np.int32),
            "task_ids": np.array(self.task_ids, dtype=str),
            "task_category": np.array(self.categories, dtype=str),
        }


def task_rng(seed: int, task_id: str) -> np.random.Generator:
    """A generator per task, so one task's draws never depend on which others are present."""
    return np.random.default_rng([seed, zlib.crc32(task_id.encode())])


def fits(pair: tuple[np.ndarray, np.ndarray], max_cells: int | None) -> bool:
    """Both grids of ``pair`` have at most ``max_cells`` cells (always, without a limit)."""
    return max_cells is None or (pair[0].size <= max_cells and pair[1].size <= max_cells)


def filtered(task: Task, max_cells: int | None) -> Task:
    """The task without pairs above ``data.max_cells`` (used to decide which tasks are usable)."""
    return Task(
        task.task_id,
        [p for p in task.train if fits(p, max_cells)],
        [p for p in task.test if fits(p, max_cells)],
        task.origin,
    )


def left_out_reason(task: Task, max_cells: int | None) -> str | None:
    """Why a task of a test source cannot be a test task (``None``: it can).

    ARC scores a task on ALL its test inputs: a task with one input filtered out by
    ``data.max_cells`` would count as solved on the others alone, so it is left out whole.
    """
    if not task.test:
        return "no test pairs"
    f = filtered(task, max_cells)
    if len(f.test) < len(task.test):
        return f"a test input over data.max_cells ({max_cells} cells)"
    if not f.train:
        return f"every demonstration over data.max_cells ({max_cells} cells)"
    return None


def build_split(
    tasks: list[Task], query_mode: str, d: Data, labels: dict[str, str]
) -> tuple[Builder, list[str]]:
    """Examples of one split. ``query_mode``: ``train`` (augmented), ``all`` (val) or ``test``.

    Context pairs of an example are drawn from its own task only: for ``train``/``all`` the
    task's other pairs, for ``test`` its demonstrations (never a test output).
    """
    k = d.context_pairs
    b = Builder(k)
    aug = d.augment
    copies = aug.copies if query_mode == "train" else 0
    max_cells = d.max_cells
    dropped = []
    for task in tasks:
        rng = task_rng(d.example_seed, task.task_id)
        # enumerate before filtering so ex_pair stays the index of the pair in the task file
        if query_mode == "test":  # every test input, or the task is not here (left_out_reason)
            queries = list(enumerate(task.test))
            demos = [(i, p) for i, p in enumerate(task.train) if fits(p, max_cells)]
            pool = [p for _, p in demos]
        else:
            queries = [(i, p) for i, p in enumerate(task.pairs) if fits(p, max_cells)]
            demos, pool = queries, None
        if not queries or (pool is not None and not pool) or (pool is None and len(queries) < 2):
            dropped.append(task.task_id)
            continue
        t_idx = len(b.task_ids)
        b.task_ids.append(task.task_id)
        b.categories.append(labels.get(task.task_id, UNLABELLED))
        for i, p in demos:  # test queries' outputs are never among them
            b.demo(t_idx, i, p)
        for qi, query in queries:
            others = pool if pool is not None else [p for j, p in queries if j != qi]
            pick = rng.permutation(len(others))[:k]
            context = [others[j] for j in sorted(pick)]
            b.example(t_idx, qi, query, context, Augmentation(), 0)
            for c in range(1, copies + 1):
                view = random_augmentation(rng, aug.dihedral, aug.colours)
                b.example(t_idx, qi, query, context, view, c)
    return b, dropped


def build_splits(
    plan: Mapping[str, tuple[list[Task], str]], d: Data, labels: dict[str, str]
) -> dict[str, tuple[Builder, list[str], dict[str, np.ndarray]]]:
    """Every split of ``plan`` (``split -> (tasks, query mode)``), refusing an empty one."""
    built = {}
    for split, (tasks, mode) in plan.items():
        builder, dropped = build_split(tasks, mode, d, labels)
        arrays = builder.arrays()
        if len(arrays["ex_task"]) == 0:
            raise ValueError(
                f"split '{split}' has no examples after filtering "
                "(loosen data.max_cells / data.max_tasks or check data.source)"
            )
        built[split] = (builder, dropped, arrays)
    return built


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (compressed, no pickled objects)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)


def write_cache(
    out_dir: str | Path,
    built: Mapping[str, tuple[Builder, list[str], dict[str, np.ndarray]]],
    manifest: dict[str, Any],
    t0: float,
) -> dict[str, Any]:
    """Write each split's npz and ``manifest.json`` (with counts and checksums) into ``out_dir``.

    A failure while writing leaves no file behind (and no folder, when this call created it).
    """
    out = Path(out_dir)
    manifest.setdefault("splits", {})
    for key in ("counts", "dropped_tasks", "files"):
        manifest.setdefault(key, {})
    created = not out.exists()
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for split, (builder, dropped, arrays) in built.items():
            path = out / f"{split}.npz"
            save_npz(path, arrays)
            written.append(path)
            manifest["splits"][split] = builder.task_ids
            manifest["dropped_tasks"][split] = dropped
            manifest["counts"][split] = {
                "tasks": len(builder.task_ids),
                "examples": len(arrays["ex_task"]),
                "grids": len(arrays["grid_h"]),
                "cells": int(arrays["cells"].size),
                "bytes": path.stat().st_size,
            }
            manifest["files"][path.name] = file_sha256(path)
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        manifest["seconds"] = round(time.perf_counter() - t0, 3)
        write_json(out / "manifest.json", manifest)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return manifest
