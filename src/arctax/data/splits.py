"""Task-level splits (never by pair), seeded and stratified, or read from a manifest."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from arctax.data.sources import Task
from arctax.data.validate import InvalidTaskError
from arctax.io import ReadError, read_json

UNLABELLED = "unlabelled"


def load_labels(path: str | Path | None) -> dict[str, str]:
    """Read a taxonomy file ``{task_id: category}``; empty when ``path`` is None."""
    if path is None:
        return {}
    p = Path(path)
    try:
        labels = read_json(p, "taxonomy labels file")
    except FileNotFoundError as e:
        raise InvalidTaskError(f"{p}: taxonomy labels file not found (fix taxonomy.labels)") from e
    except (ReadError, OSError) as e:
        raise InvalidTaskError(f"{e} (fix taxonomy.labels)") from None
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidTaskError(f"{p}: taxonomy labels must be a JSON object {{task_id: category}}")
    return labels


def size_bucket(task: Task) -> str:
    """Stratum from the first output's size when no taxonomy labels are given."""
    h, w = task.pairs[0][1].shape
    cells = h * w
    return "small" if cells <= 25 else "medium" if cells <= 225 else "large"


def split_tasks(
    tasks: list[Task], val_fraction: float, seed: int, labels: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Seeded train/val split of task ids, stratified by category (or output size)."""
    strata: dict[str, list[str]] = defaultdict(list)
    for t in sorted(tasks, key=lambda t: t.task_id):
        key = labels.get(t.task_id, UNLABELLED) if labels else size_bucket(t)
        strata[key].append(t.task_id)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for key in sorted(strata):
        ids = list(strata[key])
        rng.shuffle(ids)
        # every stratum of two or more tasks gives at least one to each side
        n_val = round(len(ids) * val_fraction)
        n_val = min(max(n_val, 1), len(ids) - 1) if len(ids) > 1 else 0
        val += ids[:n_val]
        train += ids[n_val:]
    return sorted(train), sorted(val)


def task_list_sha256(task_ids: list[str] | set[str]) -> str:
    """sha256 of a split's task ids, sorted, one per line (which tasks, not how many)."""
    return hashlib.sha256("\n".join(sorted(task_ids)).encode()).hexdigest()


def read_manifest(path: str | Path, known: set[str]) -> tuple[list[str], list[str]]:
    """Train/val task ids from a split manifest (``train_files`` / ``val_files``)."""
    p = Path(path)
    try:
        m = read_json(p, "split manifest")
        train = [Path(f).stem for f in m["train_files"]]
        val = [Path(f).stem for f in m["val_files"]]
    except FileNotFoundError as e:
        raise InvalidTaskError(f"{p}: split manifest not found (fix data.manifest)") from e
    except (ReadError, OSError) as e:
        raise InvalidTaskError(f"{e} (fix data.manifest)") from None
    except (KeyError, TypeError) as e:
        raise InvalidTaskError(
            f"{p}: split manifest must be JSON with 'train_files' and 'val_files' lists ({e})"
        ) from e
    unknown = sorted((set(train) | set(val)) - known)
    if unknown:
        raise InvalidTaskError(
            f"{p}: manifest lists {len(unknown)} task ids not in the data source, "
            f"e.g. {', '.join(unknown[:5])}"
        )
    both = sorted(set(train) & set(val))
    if both:
        raise InvalidTaskError(f"{p}: task ids in both train_files and val_files: {both[:5]}")
    return sorted(train), sorted(val)
