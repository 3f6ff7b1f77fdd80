"""The prepare step: sources -> validated, split, augmented examples -> one npz per split.

Runs once per data config; all three models read the same cache. Layout: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from arctax.data.augment import Augmentation, random_augmentation
from arctax.data.sources import SourceData, Task, check_unique, is_bundle, load_source
from arctax.data.splits import UNLABELLED, load_labels, read_manifest, split_tasks
from arctax.io import atomic_write, file_sha256, write_json

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
CACHE_FORMAT = 2  # 2: each task's demonstration pairs are stored (demo_* arrays)


class _Builder:
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


def _task_rng(seed: int, task_id: str) -> np.random.Generator:
    """A generator per task, so one task's draws never depend on which others are present."""
    return np.random.default_rng([seed, zlib.crc32(task_id.encode())])


def _fits(pair: tuple[np.ndarray, np.ndarray], max_cells: int | None) -> bool:
    return max_cells is None or (pair[0].size <= max_cells and pair[1].size <= max_cells)


def _filter(task: Task, max_cells: int | None) -> Task:
    """The task without pairs above ``data.max_cells`` (used to decide which tasks are usable)."""
    return Task(
        task.task_id,
        [p for p in task.train if _fits(p, max_cells)],
        [p for p in task.test if _fits(p, max_cells)],
        task.origin,
    )


def _build_split(
    tasks: list[Task], query_mode: str, d: Mapping[str, Any], labels: dict[str, str]
) -> tuple[_Builder, list[str]]:
    """Examples of one split. ``query_mode``: ``train`` (augmented), ``all`` (val) or ``test``."""
    k = d["context_pairs"]
    b = _Builder(k)
    aug_cfg = d["augment"]
    copies = aug_cfg["copies"] if query_mode == "train" else 0
    max_cells = d.get("max_cells")
    dropped = []
    for task in tasks:
        rng = _task_rng(d["example_seed"], task.task_id)
        # enumerate before filtering so ex_pair stays the index of the pair in the task file
        if query_mode == "test":  # every test input, or the task is not here (_testable)
            queries = list(enumerate(task.test))
            demos = [(i, p) for i, p in enumerate(task.train) if _fits(p, max_cells)]
            pool = [p for _, p in demos]
        else:
            queries = [(i, p) for i, p in enumerate(task.pairs) if _fits(p, max_cells)]
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
                aug = random_augmentation(rng, aug_cfg["dihedral"], aug_cfg["colours"])
                b.example(t_idx, qi, query, context, aug, c)
    return b, dropped


def config_hash(cfg: Mapping[str, Any]) -> str:
    """Hash of the config blocks that determine the cache (``data`` and ``taxonomy``)."""
    blob = json.dumps({"data": cfg["data"], "taxonomy": cfg["taxonomy"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (compressed, no pickled objects)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)


HELD_OUT = "held_out"  # data.test_source: test tasks held out of data.source itself


def load_sources(cfg: Mapping[str, Any]) -> tuple[SourceData, SourceData | None]:
    """The training source and the test source named by the config.

    The test source is ``None`` for ``data.test_source: held_out`` (test tasks are then a
    stratified share of the training source, see :func:`prepare`).
    """
    d = cfg["data"]
    kw = dict(on_invalid=d["on_invalid"], max_grid=d["max_grid"])
    train_src = load_source(d["source"], "train", **kw)
    test_name = d.get("test_source") or (d["source"] if is_bundle(d["source"]) else "arcagi")
    if test_name == HELD_OUT:
        return train_src, None
    test_src = load_source(test_name, "eval" if is_bundle(test_name) else "train", **kw)
    check_unique(train_src, test_src)
    return train_src, test_src


def left_out_reason(task: Task, max_cells: int | None) -> str | None:
    """Why a task of the test source cannot be a test task (``None``: it can).

    ARC scores a task on ALL its test inputs: a task with one input filtered out by
    ``data.max_cells`` would count as solved on the others alone, so it is left out whole.
    """
    if not task.test:
        return "no test pairs"
    f = _filter(task, max_cells)
    if len(f.test) < len(task.test):
        return f"a test input over data.max_cells ({max_cells} cells)"
    if not f.train:
        return f"every demonstration over data.max_cells ({max_cells} cells)"
    return None


def _testable(task: Task, max_cells: int | None) -> bool:
    return left_out_reason(task, max_cells) is None


def prepare(cfg: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Build the cache for ``cfg`` in ``out_dir``; return the manifest (also written there).

    Everything is read, split and built in memory first; ``out_dir`` is created only when
    there is something to write, and a failure while writing leaves no files behind.
    """
    t0 = time.perf_counter()
    d = cfg["data"]
    out = Path(out_dir)
    labels_path = cfg["taxonomy"].get("labels")
    labels = load_labels(labels_path)
    train_src, test_src = load_sources(cfg)
    max_cells = d.get("max_cells")
    test_pool: list[Task] = test_src.tasks if test_src is not None else []
    train_tasks = train_src.tasks
    if test_src is None:  # held out: a seeded share of the labelled source, per category
        candidates = [t for t in train_tasks if _testable(t, max_cells)]
        _, held = split_tasks(candidates, d["test_fraction"], d["split_seed"] + 1, labels)
        held_set = set(held)
        test_pool = [t for t in candidates if t.task_id in held_set]
        train_tasks = [t for t in train_tasks if t.task_id not in held_set]
    filtered = [_filter(t, max_cells) for t in train_tasks]
    originals = {t.task_id: t for t in train_tasks}
    by_id = {t.task_id: originals[t.task_id] for t in filtered if len(t.pairs) >= 2}
    unusable = sorted(t.task_id for t in filtered if len(t.pairs) < 2)
    if d.get("manifest"):
        train_ids, val_ids = read_manifest(d["manifest"], {t.task_id for t in train_src.tasks})
        train_ids = [i for i in train_ids if i in by_id]
        val_ids = [i for i in val_ids if i in by_id]
    else:
        train_ids, val_ids = split_tasks(
            list(by_id.values()), d["val_fraction"], d["split_seed"], labels
        )
    usable = {t.task_id for t in test_pool if _testable(t, max_cells)}
    test_tasks = sorted((t for t in test_pool if t.task_id in usable), key=lambda t: t.task_id)
    left_out = {
        t.task_id: left_out_reason(t, max_cells) for t in test_pool if t.task_id not in usable
    }
    unusable += sorted(t for t, why in left_out.items() if "max_cells" in str(why))
    n = d.get("max_tasks")
    plan = {
        "train": ([by_id[i] for i in train_ids][:n], "train"),
        "val": ([by_id[i] for i in val_ids][:n], "all"),
        "test": (test_tasks[:n], "test"),
    }
    test_name = f"{train_src.name} (held out)" if test_src is None else test_src.name
    test_version = train_src.version if test_src is None else test_src.version
    manifest: dict[str, Any] = {
        "cache_format": CACHE_FORMAT,
        "source": train_src.name,
        "test_source": test_name,
        "version": train_src.version,
        "test_version": test_version,
        "k": d["context_pairs"],
        "splits": {},
        "counts": {},
        "dropped_tasks": {},
        "skipped_invalid": train_src.skipped + (test_src.skipped if test_src else []),
        "unusable_after_filter": unusable,
        "test_left_out": dict(sorted(left_out.items())),  # task id -> why; left out whole
        "files": {},
    }
    built = {}
    for split, (tasks, mode) in plan.items():
        builder, dropped = _build_split(tasks, mode, d, labels)
        arrays = builder.arrays()
        if len(arrays["ex_task"]) == 0:
            raise ValueError(
                f"split '{split}' has no examples after filtering "
                "(loosen data.max_cells / data.max_tasks or check data.source)"
            )
        built[split] = (builder, dropped, arrays)
    extra = [Path(p) for p in (labels_path, d.get("manifest")) if p]
    h = hashlib.sha256((train_src.sha256 + (test_src.sha256 if test_src else HELD_OUT)).encode())
    for p in extra:
        h.update(p.read_bytes())
    manifest["inputs_sha256"] = h.hexdigest()
    manifest["config_sha256"] = config_hash(cfg)
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
