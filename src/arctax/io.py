"""Atomic file writes (a temp file in the target's folder, then a rename) and bounded reads.

A reader (or a Snakemake job killed mid-write) never sees a half-written file. The temp file
``mkstemp`` creates is private (0600); it gets the mode a plain ``open()`` would give
(0666 minus the umask) before the rename, so results stay readable by the user's group on a
shared cluster file system.

A file from elsewhere is read through :func:`open_regular` / :func:`read_bytes` /
:func:`read_json`: regular files only, a size cap each, JSON refused before parsing when its
depth or the memory it would take is over a bound; every refusal one :class:`ReadError` line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


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


def copy_atomic(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` atomically (a temp file beside ``dst``, then a rename)."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


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
    """Hex SHA-256 of a regular file (read in chunks; a device or a FIFO is refused, as
    :func:`open_regular` does)."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- bounded reads of files from elsewhere ---------------------------------------------------
# A file from elsewhere (a checkpoint, a submission, a task file, a prepared cache) is checked
# in bytes, items and depth BEFORE it is parsed, so no file can make a reader allocate more
# than its bound or run longer than a pass over its bytes (docs/REFERENCE.md, "What each
# reader of a file from elsewhere trusts").

MAX_JSON_DEPTH = 32  # arctax's own JSON nests 6 deep at most (a submission: 5)
# What json.loads may allocate, from counts made before parsing (json_cost): measured on
# CPython 3.11 (tests/test_io.py), an item costs at most 64 bytes per bracket, comma or colon of
# the text (an empty list in a list: 64 B for the 3 bytes of "[],"; a dict entry {"a":0}: 192 B
# for 3 of them), and the text itself at most 10 bytes per byte: the bytes read, their decoding
# and the strings made of them (UCS-4 once one character needs it: 8 B a byte measured).
JSON_ITEM_BYTES = 64
JSON_BYTE_FACTOR = 10
MAX_JSON_COST = 400 * 2**20
MAX_JSON_BYTES = MAX_JSON_COST // JSON_BYTE_FACTOR  # 40 MiB: more could not be parsed anyway
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_SQUARE = bytes.maketrans(b"{}", b"[]")


class ReadError(ValueError):
    """A file from elsewhere is refused before or while it is parsed: one line naming it,
    what is wrong and the fix."""


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words (for "not a regular file" messages)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device (such as /dev/zero)"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: str | Path, what: str = "file") -> BinaryIO:
    """``path`` opened for reading, refused unless it is a regular file (a link to
    ``/dev/zero``, a FIFO or a directory would never end or never start). The open does not
    block on a FIFO; the check is on the opened file, so a swap after it changes nothing.
    A missing file raises :class:`FileNotFoundError`."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ReadError(f"{path}: {file_kind(mode)}, not a regular file; give the {what}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, refused over ``max_bytes`` (declared, and
    while reading: a file that grows)."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(max_bytes + 1) if size <= max_bytes else b""
    if size > max_bytes or len(data) > max_bytes:
        raise ReadError(
            f"{path}: {max(size, len(data))} bytes, over the {max_bytes} a {what} may have; "
            "give the right file"
        )
    return data


def json_cost(data: bytes) -> int:
    """An upper bound on the bytes ``json.loads(data)`` allocates (see :data:`JSON_ITEM_BYTES`),
    from counts made at C speed."""
    items = sum(data.count(c) for c in (b"[", b"{", b",", b":"))
    return JSON_ITEM_BYTES * items + JSON_BYTE_FACTOR * len(data)


def json_too_deep(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``data`` nests brackets deeper than ``limit`` (strings ignored): each pass
    drops the innermost pairs, at most ``limit`` passes. Unbalanced text is left to the
    parser's own message."""
    b = _JSON_STRING.sub(b"", data).translate(_SQUARE, _NOT_BRACKETS)
    for _ in range(limit):
        if not b:
            return False
        shorter = b.replace(b"[]", b"")
        if len(shorter) == len(b):
            return False
        b = shorter
    return bool(b)


def loads_json(
    data: bytes, origin: str, *, max_cost: int = MAX_JSON_COST, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """``json.loads(data)``, refused before parsing when it would nest deeper than
    ``max_depth`` or allocate more than ``max_cost`` bytes; every failure one
    :class:`ReadError` naming ``origin``."""
    cost = json_cost(data)
    if cost > max_cost:
        raise ReadError(
            f"{origin}: its {len(data)} bytes of JSON would take up to {cost >> 20} MiB to parse "
            f"(brackets, commas and colons at {JSON_ITEM_BYTES} bytes each), over the "
            f"{max_cost >> 20} MiB a file may take; give the right file"
        )
    if json_too_deep(data, max_depth):
        raise ReadError(
            f"{origin}: JSON nested deeper than {max_depth} levels; give the right file"
        )
    try:
        return json.loads(data)
    except (UnicodeDecodeError, RecursionError) as e:
        raise ReadError(f"{origin}: not valid JSON ({type(e).__name__}: {e})") from None
    except ValueError as e:  # JSONDecodeError, or an integer over Python's 4300 digits
        raise ReadError(f"{origin}: not valid JSON ({str(e).splitlines()[0]})") from None


def read_json(
    path: str | Path, what: str = "JSON file", max_bytes: int | None = None, **bounds: int
) -> Any:
    """A JSON file from elsewhere: a regular file of at most ``max_bytes`` (default: what
    ``max_cost`` can parse, :data:`MAX_JSON_BYTES`), parsed under :func:`loads_json`'s bounds."""
    limit = max_bytes or bounds.get("max_cost", MAX_JSON_COST) // JSON_BYTE_FACTOR
    return loads_json(read_bytes(path, limit, what), str(path), **bounds)
