"""One test set's cache: ``test.npz`` and ``manifest.json`` in a folder of its own.

A test set is read from its source (:mod:`arctax.data.testsets`) and checked against the
training data's manifest: none of its tasks may be a task of the training source (only the
tasks reserved from train/val, ``held_out``, are). Its queries are the tasks' test pairs, their
context the tasks' demonstrations; a task is kept with all its test inputs or left out whole.
The test set ``val`` is the training data's ``val.npz`` itself, copied (:func:`prepare_val_set`).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arctax.data.cache import CACHE_FORMAT, build_splits, left_out_reason, write_cache
from arctax.data.dataset import load_split
from arctax.data.sources import SourceData, Task, held_out_pool, is_bundle, load_source
from arctax.data.splits import load_labels
from arctax.data.testsets import HELD_OUT, VAL, named_sets, set_config
from arctax.data.validate import InvalidTaskError
from arctax.io import ReadError, atomic_write, file_sha256, read_json, write_json
from arctax.lifecycle import fingerprint
from arctax.settings import Data, Taxonomy


@dataclass
class SetPlan:
    """The tasks of one test set, and what its manifest records."""

    name: str
    source: str
    version: str
    kind: str
    sha256: str
    tasks: list[Task]
    left_out: dict[str, str]
    skipped: list[str] = field(default_factory=list)


def plan_test(
    d: Data,
    name: str,
    training: Mapping[str, Any],
    train_src: SourceData | None = None,
) -> SetPlan:
    """Read test set ``name`` and check it against ``training`` (the training manifest).

    ``held_out`` takes the tasks the training data reserved (``training["held_out"]``) from the
    training source (``train_src``, or read again from ``training["source_path"]``).
    """
    source = named_sets(d)[name]
    max_cells = d.max_cells
    if source == HELD_OUT:
        ids = list(training["held_out"])
        if not ids:
            raise InvalidTaskError(
                f"test set '{name}' is held_out but the training data reserved no tasks: set "
                "data.held_out_fraction (it changes the training data)"
            )
        if train_src is None and training["source_kind"] == "re-arc":
            # re-arc tasks are tested as their ARC-AGI-1 originals: no need to read re-arc again
            arc1 = load_source("arcagi", "train", max_grid=d.max_grid)
            pool = {t.task_id: t for t in arc1.tasks if t.task_id in set(ids)}
        else:
            if train_src is None:
                train_src = load_source(
                    training["source_path"], on_invalid=d.on_invalid, max_grid=d.max_grid
                )
            pool = held_out_pool(train_src, set(ids), d.max_grid)
        pool_tasks = [pool[i] for i in ids if i in pool]
        origin = f"{training['source']} (held out)"
        digest = hashlib.sha256(
            (training["inputs_sha256"] + HELD_OUT + ",".join(ids)).encode()
        ).hexdigest()
        plan = SetPlan(name, origin, training["version"], training["source_kind"], digest, [], {})
    else:
        src = load_source(
            source,
            "eval" if is_bundle(source) else "train",
            on_invalid=d.on_invalid,
            max_grid=d.max_grid,
        )
        trained = set(training["source_task_ids"]) - set(training["held_out"])
        for t in src.tasks:
            if t.task_id in trained:
                raise InvalidTaskError(
                    f"duplicate task id '{t.task_id}' in the training source "
                    f"({training['source']}) and test set '{name}' ({t.origin}): a test task "
                    "must never be trained on (rename one of the files or remove it)"
                )
        pool_tasks = src.tasks
        plan = SetPlan(name, src.name, src.version, src.kind, src.sha256, [], {}, src.skipped)
    usable = sorted(
        (t for t in pool_tasks if left_out_reason(t, max_cells) is None), key=lambda t: t.task_id
    )
    plan.tasks = usable[: d.max_tasks]
    ok = {t.task_id for t in usable}
    plan.left_out = dict(
        sorted(
            (t.task_id, left_out_reason(t, max_cells)) for t in pool_tasks if t.task_id not in ok
        )
    )
    return plan


def test_set_params(d: Data, taxonomy: Taxonomy, name: str) -> dict[str, Any]:
    """What test set ``name``'s preparation depends on (the workflow's prepare_test params):
    its source, the data keys of role ``test_sets`` and the taxonomy."""
    return {"set": set_config(d, name), "taxonomy": taxonomy.as_dict()}


def set_config_hash(d: Data, taxonomy: Taxonomy, name: str) -> str:
    """The manifest's ``config_sha256``: the fingerprint of :func:`test_set_params` (its set
    under the key ``test_set``, as the hash was first recorded: prepared sets keep theirs)."""
    params = test_set_params(d, taxonomy, name)
    return fingerprint({"test_set": params["set"], "taxonomy": params["taxonomy"]})


def set_manifest(
    d: Data, taxonomy: Taxonomy, plan: SetPlan, training: Mapping[str, Any]
) -> dict[str, Any]:
    """A test set's manifest, before its split is written."""
    labels_path = taxonomy.labels
    h = hashlib.sha256(plan.sha256.encode())
    if labels_path:
        h.update(Path(labels_path).read_bytes())
    return {
        "cache_format": CACHE_FORMAT,
        "kind": "test",
        "test_set": plan.name,
        "source": plan.source,
        "source_kind": plan.kind,
        "version": plan.version,
        "k": d.context_pairs,
        "splits": {},
        "counts": {},
        "dropped_tasks": {},
        "skipped_invalid": list(plan.skipped),
        "unusable_after_filter": sorted(
            t for t, why in plan.left_out.items() if "max_cells" in why
        ),
        "test_left_out": plan.left_out,  # task id -> why; left out whole
        "files": {},
        "inputs_sha256": h.hexdigest(),
        "config_sha256": set_config_hash(d, taxonomy, plan.name),
        "training": {k: training[k] for k in ("source", "inputs_sha256", "config_sha256")},
    }


def prepare_test_set(
    d: Data, taxonomy: Taxonomy, name: str, out_dir: str | Path, training_dir: str | Path
) -> dict[str, Any]:
    """Build test set ``name`` into ``out_dir`` (``test.npz``, ``manifest.json``), checked
    against the training data prepared in ``training_dir``; return its manifest."""
    t0 = time.perf_counter()
    path = Path(training_dir) / "manifest.json"
    try:
        training = read_json(path, "training data's manifest.json")
    except (OSError, ReadError) as e:
        raise InvalidTaskError(
            f"{path}: missing or unreadable ({e}); prepare the training data first"
        ) from e
    if not isinstance(training, dict):
        raise InvalidTaskError(f"{path}: not a cache manifest; prepare the training data again")
    if named_sets(d)[name] == VAL:
        return prepare_val_set(d, taxonomy, name, out_dir, training_dir, training, t0)
    plan = plan_test(d, name, training)
    labels = load_labels(taxonomy.labels)
    built = build_splits({"test": (plan.tasks, "test")}, d, labels)
    return write_cache(out_dir, built, set_manifest(d, taxonomy, plan, training), t0)


def prepare_val_set(
    d: Data,
    taxonomy: Taxonomy,
    name: str,
    out_dir: str | Path,
    training_dir: str | Path,
    training: Mapping[str, Any],
    t0: float,
) -> dict[str, Any]:
    """Test set ``name`` (source ``val``): the training data's ``val.npz``, copied unchanged as
    ``test.npz`` (every example of the val tasks, each a query with other examples of its task
    as context: the paper's val split), and a test manifest naming where it came from."""
    src = Path(training_dir) / "val.npz"
    if training.get("files", {}).get("val.npz") not in (None, file_sha256(src)):
        raise InvalidTaskError(
            f"{src}: does not match {Path(training_dir) / 'manifest.json'} (its sha256 differs); "
            "prepare the training data again"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "test.npz", lambda tmp: shutil.copyfile(src, tmp))
    ds = load_split(out, "test")
    ids = [str(t) for t in ds.task_ids]
    manifest = {
        "cache_format": CACHE_FORMAT,
        "kind": "test",
        "test_set": name,
        "source": f"{training['source']} (val split)",
        "source_kind": training["source_kind"],
        "version": training["version"],
        "k": training["k"],
        "val_split": True,  # examples, not test pairs: every example of each val task
        "examples_per_task": training.get("examples_per_task"),
        "splits": {"test": ids},
        "counts": {
            "test": {**training["counts"]["val"], "bytes": (out / "test.npz").stat().st_size}
        },
        "dropped_tasks": {"test": []},
        "skipped_invalid": [],
        "unusable_after_filter": [],
        "test_left_out": {},
        "files": {"test.npz": file_sha256(out / "test.npz")},
        "inputs_sha256": training["files"].get("val.npz") or file_sha256(src),
        "config_sha256": set_config_hash(d, taxonomy, name),
        "training": {k: training[k] for k in ("source", "inputs_sha256", "config_sha256")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_json(out / "manifest.json", manifest)
    return manifest
