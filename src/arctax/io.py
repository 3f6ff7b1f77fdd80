"""Atomic file writes: a temp file in the target's folder, then a rename.

A reader (or a Snakemake job killed mid-write) never sees a half-written file. The temp file
``mkstemp`` creates is private (0600); it gets the mode a plain ``open()`` would give
(0666 minus the umask) before the rename, so results stay readable by the user's group on a
shared cluster file system.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _interned(obj: Any) -> Any:
    """``obj`` with every string of its dicts, lists and tuples interned (tensors untouched)."""
    if isinstance(obj, dict):
        return {_interned(k): _interned(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_interned(v) for v in obj]
    if type(obj) is tuple:
        return tuple(_interned(v) for v in obj)
    if type(obj) is str:
        return sys.intern(obj)
    return obj


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically, the same bytes for the same content.

    Two things made equal checkpoints differ byte for byte (and their sha256, which
    evaluations and adaptation shards record): torch names the folder inside the zip after the
    file name it is given (the temp file's random name), so it is saved through an open file;
    and pickle writes a string once per object, so a resumed training, whose keys were loaded
    from a checkpoint as new string objects, pickled differently from an uninterrupted one, so
    every string is interned first.
    """
    import torch

    obj = _interned(obj)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def unsafe_name(name: str) -> str | None:
    """Why ``name`` (from data: a task id) cannot be one file name inside a folder of ours,
    e.g. ``adapters/<task_id>.pt``; None when it can."""
    if not name or name in (".", ".."):
        return "empty, '.' or '..'"
    if any(c in name for c in "/\\\0"):
        return "it holds '/', '\\' or NUL"
    return None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
