"""The prepare step: sources -> validated, split, augmented examples -> one npz per split.

The training data (``train``/``val``, :func:`prepare_training`) are prepared once per data config
and read by all three models; each test set has a cache of its own
(:func:`arctax.data.prepare_test.prepare_test_set`), so a test set never changes what training
reads. :func:`prepare` builds both into one folder (the command line, the tests). Layout:
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arctax.data.cache import CACHE_FORMAT, build_splits, filtered, left_out_reason, write_cache
from arctax.data.prepare_test import prepare_test_set
from arctax.data.rearc import Sample, sample_pairs
from arctax.data.sources import SourceData, Task, held_out_pool, load_source
from arctax.data.splits import load_labels, read_manifest, split_tasks
from arctax.data.testsets import held_out_fraction, named_sets, training_data_config
from arctax.data.validate import InvalidTaskError
from arctax.io import write_json
from arctax.lifecycle import fingerprint
from arctax.settings import Data, Taxonomy

GENERATED = "rearc"  # data.source when the workflow generates re-arc (data.rearc.repo)


def training_data(data: Data, taxonomy: Taxonomy) -> dict[str, Any]:
    """What the training data depend on: ``data`` without the test sets' keys
    (:func:`~arctax.data.testsets.training_data_config`) and ``taxonomy`` (the workflow's
    prepare_data params; their fingerprint is the manifest's ``config_sha256``)."""
    return {"data": training_data_config(data), "taxonomy": taxonomy.as_dict()}


@dataclass
class TrainingPlan:
    """The training source, read and split (before any array is built)."""

    source: SourceData
    source_path: str
    labels: dict[str, str]
    train: list[Task]
    val: list[Task]
    reserved: list[str]  # task ids held out of train/val for a held_out test set
    unusable: list[str]
    short: dict[str, int] = field(default_factory=dict)  # task -> examples, below examples_per_task
    extra_inputs: list[Path] = field(default_factory=list)


def plan_training(
    d: Data, taxonomy: Taxonomy, source_path: str | Path | None = None
) -> TrainingPlan:
    """Read ``data.source`` (or ``source_path``: the workflow's generated re-arc folder), reserve
    the held-out share, sample ``data.examples_per_task`` per task and split train/val by task."""
    source = str(source_path or d.source)
    if source == GENERATED:
        raise InvalidTaskError(
            "data.source: rearc is made by the workflow (snakemake runs generate_rearc with "
            "data.rearc.repo); to prepare by hand, generate it (arctax generate-rearc) and give "
            "its folder as data.source"
        )
    labels_path = taxonomy.labels
    labels = load_labels(labels_path)
    max_cells = d.max_cells
    sample = Sample(d.examples_per_task, d.example_seed, max_cells)
    src = load_source(source, "train", on_invalid=d.on_invalid, max_grid=d.max_grid, sample=sample)
    tasks = src.tasks
    reserved: list[str] = []
    fraction = held_out_fraction(d)
    if fraction > 0:  # a seeded share of the tasks testable as held out, per category
        pool = held_out_pool(src, max_grid=d.max_grid)
        candidates = [
            pool[t.task_id]
            for t in tasks
            if t.task_id in pool and left_out_reason(pool[t.task_id], max_cells) is None
        ]
        _, reserved = split_tasks(candidates, fraction, d.split_seed + 1, labels)
        tasks = [t for t in tasks if t.task_id not in set(reserved)]
    tasks = [Task(t.task_id, sample_pairs(t.pairs, t.task_id, sample), [], t.origin)
             if sample.n is not None and len(t.pairs) > sample.n else t for t in tasks]  # fmt: skip
    short = {}
    if sample.n is not None:
        short = {t.task_id: len(t.pairs) for t in tasks if len(t.pairs) < sample.n}
    filt = [filtered(t, max_cells) for t in tasks]
    originals = {t.task_id: t for t in tasks}
    by_id = {t.task_id: originals[t.task_id] for t in filt if len(t.pairs) >= 2}
    unusable = sorted(t.task_id for t in filt if len(t.pairs) < 2)
    if d.manifest:
        train_ids, val_ids = read_manifest(d.manifest, {t.task_id for t in src.tasks})
        train_ids = [i for i in train_ids if i in by_id]
        val_ids = [i for i in val_ids if i in by_id]
    else:
        train_ids, val_ids = split_tasks(list(by_id.values()), d.val_fraction, d.split_seed, labels)
    n = d.max_tasks
    extra = [Path(p) for p in (labels_path, d.manifest) if p]
    return TrainingPlan(
        src, source, labels, [by_id[i] for i in train_ids][:n], [by_id[i] for i in val_ids][:n],
        sorted(reserved), unusable, short, extra,
    )  # fmt: skip


def training_manifest(d: Data, taxonomy: Taxonomy, plan: TrainingPlan) -> dict[str, Any]:
    """The training data's manifest, before the splits are written (see docs/ARCHITECTURE.md)."""
    src = plan.source
    h = hashlib.sha256(src.sha256.encode())
    for p in plan.extra_inputs:
        h.update(p.read_bytes())
    return {
        "cache_format": CACHE_FORMAT,
        "kind": "training",
        "source": src.name,
        "source_kind": src.kind,
        "source_path": plan.source_path,
        "version": src.version,
        "k": d.context_pairs,
        "examples_per_task": d.examples_per_task,
        "short_tasks": plan.short,  # tasks with fewer examples than examples_per_task
        "held_out_fraction": held_out_fraction(d),
        "held_out": plan.reserved,  # reserved from train/val: a held_out test set's tasks
        "source_task_ids": sorted(t.task_id for t in src.tasks),
        "splits": {},
        "counts": {},
        "dropped_tasks": {},
        "skipped_invalid": list(src.skipped),
        "unusable_after_filter": list(plan.unusable),
        "files": {},
        "inputs_sha256": h.hexdigest(),
        "config_sha256": fingerprint(training_data(d, taxonomy)),
    }


def prepare_training(
    d: Data, taxonomy: Taxonomy, out_dir: str | Path, source_path: str | Path | None = None
) -> dict[str, Any]:
    """Build ``train.npz``, ``val.npz`` and ``manifest.json`` in ``out_dir``; return the manifest.

    ``source_path`` replaces ``data.source`` (the workflow's generated re-arc folder). Everything
    is read, split and built in memory first; a failure while writing leaves no files behind.
    """
    t0 = time.perf_counter()
    plan = plan_training(d, taxonomy, source_path)
    built = build_splits({"train": (plan.train, "train"), "val": (plan.val, "all")}, d, plan.labels)
    return write_cache(out_dir, built, training_manifest(d, taxonomy, plan), t0)


# the test set's manifest keys the one-folder manifest takes, as test_<key>
_TEST_KEYS = ("source", "version", "source_kind", "inputs_sha256")


def prepare(
    d: Data, taxonomy: Taxonomy, out_dir: str | Path, test_set: str | None = None
) -> dict[str, Any]:
    """Training data and one test set (``test_set``, default the first) in one folder, by the
    workflow's own two steps (:func:`prepare_training`, then
    :func:`~arctax.data.prepare_test.prepare_test_set` into ``test/<name>/``, whose
    ``test.npz`` is moved beside the training splits): ``{train,val,test}.npz`` and one
    ``manifest.json`` (training's keys, plus ``test_set``, ``test_source``, ``test_version``,
    ``test_source_kind``, ``test_inputs_sha256``, ``test_left_out`` and the test split's
    entries); return the manifest. For the command line, benchmarks and tests."""
    sets = named_sets(d)
    name = test_set or next(iter(sets))
    if name not in sets:
        raise InvalidTaskError(
            f"no test set '{name}' (the config has {', '.join(sets)}; data.test_sets)"
        )
    out = Path(out_dir)
    manifest = prepare_training(d, taxonomy, out)
    folder = out / "test" / name
    try:
        tm = prepare_test_set(d, taxonomy, name, folder, out)
        os.replace(folder / "test.npz", out / "test.npz")
    finally:
        shutil.rmtree(out / "test", ignore_errors=True)
    manifest.update({f"test_{k}": tm[k] for k in _TEST_KEYS})
    manifest.update(test_set=name, test_left_out=tm["test_left_out"])
    for key in ("splits", "counts", "dropped_tasks"):
        manifest[key]["test"] = tm[key]["test"]
    manifest["files"]["test.npz"] = tm["files"]["test.npz"]
    manifest["skipped_invalid"] += [
        t for t in tm["skipped_invalid"] if t not in manifest["skipped_invalid"]
    ]
    manifest["unusable_after_filter"] += tm["unusable_after_filter"]
    write_json(out / "manifest.json", manifest)
    return manifest
