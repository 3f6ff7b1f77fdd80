"""re-arc's own layout as a task source: its folder, its zip, or a folder of its task files.

re-arc (github.com/michaelhodel/re-arc) ships ``re_arc.zip``, which unpacks to
``re_arc/tasks/<task_id>.json`` (a JSON **list** of ``{"input", "output"}`` examples, 1000 verified
per task) and ``re_arc/metadata.json`` (per-task generation statistics); the workflow's
``generate_rearc`` stage writes the same layout (plus ``generation.json``). Each task becomes a
:class:`~arctax.data.sources.Task` whose ``train`` pairs are a seeded sample of its examples
(``data.examples_per_task``) and whose ``test`` is empty: an example's context pairs come from
the same task's other examples.

Only the sampled examples are validated and kept (as uint8 arrays), so 400 tasks x 1000 examples
never sit in memory at once.

A zip is read, never extracted: members are read by name into memory, one at a time. An
archive with a member that could not be a re-arc file is refused whole, before any is read: a
name that is absolute or climbs out (``../x``, ``C:\\x``), a symlink, an encrypted member or
one compressed by a method Python cannot read, a member over :data:`MAX_MEMBER_BYTES`
(declared, and checked again while reading: a zip bomb), more than :data:`MAX_MEMBERS` members
or :data:`MAX_ARCHIVE_BYTES` in all. A task file's JSON is parsed only under
:func:`arctax.io.loads_json`'s bounds (depth, and the memory its brackets and commas would
take), so one file costs at most about :data:`arctax.io.MAX_JSON_COST` however it is built.
A task id is its file's or member's name: one that is not one file name (``.``, ``..``, a
separator, NUL) is refused, naming it.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arctax.data.validate import InvalidTaskError, short, validate_grid
from arctax.io import (
    JSON_BYTE_FACTOR,
    MAX_JSON_COST,
    ReadError,
    loads_json,
    read_bytes,
    unsafe_name,
)

_TASK = re.compile(r"(?:^|/)tasks/([^/]+)\.json$")
_META = re.compile(r"(?:^|/)metadata\.json$")
_GENERATION = re.compile(r"(?:^|/)generation\.json$")
# One re-arc task file is at most ~5.6 MB (1000 examples of two 30x30 grids); a bigger one
# could not be parsed within MAX_JSON_COST anyway (JSON_BYTE_FACTOR bytes per byte at least).
MAX_MEMBER_BYTES = MAX_JSON_COST // JSON_BYTE_FACTOR
MAX_MEMBERS = 100_000  # re-arc has 400 tasks
MAX_ARCHIVE_BYTES = 16 * 2**30  # declared, all members: re-arc's zip holds ~1 GB
READABLE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_S_IFMT, _S_IFLNK = 0o170000, 0o120000


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why ``info`` cannot be a member of a re-arc zip (None: it can)."""
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
        return "a name that is absolute or climbs out of the archive"
    if (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
        return "a symbolic link"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.compress_type not in READABLE_METHODS:
        return f"compressed by method {info.compress_type}, which Python's zipfile cannot read"
    if info.file_size > MAX_MEMBER_BYTES:
        return f"{info.file_size} bytes uncompressed, over the {MAX_MEMBER_BYTES} a file may have"
    return None


def read_file(path: str | Path) -> bytes:
    """A task file's bytes; refuses, before reading, what is not a regular file (a link to
    ``/dev/zero``, a FIFO) or is over :data:`MAX_MEMBER_BYTES`."""
    try:
        return read_bytes(path, MAX_MEMBER_BYTES, "task file")
    except (ReadError, OSError) as e:
        msg = str(e) if isinstance(e, ReadError) else f"{path}: unreadable ({e})"
        raise InvalidTaskError(f"{msg}; remove it from the folder (fix data.source)") from None


def parse_task_json(data: bytes, origin: str) -> Any:
    """A task file's JSON under :func:`arctax.io.loads_json`'s bounds; :class:`InvalidTaskError`
    naming ``origin`` otherwise."""
    try:
        return loads_json(data, origin)
    except ReadError as e:
        raise InvalidTaskError(str(e)) from None


def task_id_of(name: str, origin: str) -> str:
    """``name`` (a file or member stem) as a task id, refused when it is not one file name
    (task ids name files of ours: ``adapters/<task_id>.pt``)."""
    why = unsafe_name(name)
    if why:
        raise InvalidTaskError(
            f"{origin}: task id {short(name)} cannot name a file ({why}); rename or remove the "
            "file (fix data.source)"
        )
    return name


def read_member(z: zipfile.ZipFile, name: str, origin: Path) -> bytes:
    """The bytes of member ``name``, reading at most :data:`MAX_MEMBER_BYTES` (whatever the
    member declares)."""
    try:
        with z.open(name) as f:
            data = f.read(MAX_MEMBER_BYTES + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        # a size or CRC that lies, a cut stream, a method or encryption zipfile cannot read
        raise InvalidTaskError(
            f"{origin}: member {name!r} is corrupt ({e}); give re-arc's own re_arc.zip or its "
            "folder (fix data.source)"
        ) from e
    if len(data) > MAX_MEMBER_BYTES:
        raise InvalidTaskError(
            f"{origin}: member {name!r} holds over {MAX_MEMBER_BYTES} bytes (a zip bomb?); "
            "give re-arc's own re_arc.zip or its folder (fix data.source)"
        )
    return data


@dataclass(frozen=True)
class Sample:
    """How many examples to keep per task (``None``: all) and what they must fit."""

    n: int | None = None
    seed: int = 0
    max_cells: int | None = None


def is_example_list(obj: Any) -> bool:
    """True for re-arc's task format: a JSON list of ``{"input", "output"}`` objects."""
    return isinstance(obj, list) and bool(obj) and all(isinstance(x, dict) for x in obj[:3])


def sample_order(n_total: int, seed: int, task_id: str) -> np.ndarray:
    """A seeded order of a task's examples, the same whatever other tasks are read."""
    rng = np.random.default_rng([seed, zlib.crc32(task_id.encode()), 1])
    return rng.permutation(n_total)


def sample_examples(
    examples: list[Any], task_id: str, origin: str, sample: Sample, max_grid: int = 30
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``sample.n`` examples of one task (all when it has fewer), validated, in file order.

    Examples are drawn in a seeded order; one with a grid over ``sample.max_cells`` is passed
    over, so the sample has ``n`` examples whenever the task has that many that fit. An invalid
    example drawn raises :class:`InvalidTaskError` naming the file, task and example.
    """
    order = sample_order(len(examples), sample.seed, task_id)
    keep: list[tuple[int, tuple[np.ndarray, np.ndarray]]] = []
    for i in map(int, order):
        if sample.n is not None and len(keep) >= sample.n:
            break
        ex = examples[i]
        where = f"{origin}: task {task_id}: example {i}"
        if not isinstance(ex, dict) or "input" not in ex or "output" not in ex:
            raise InvalidTaskError(f"{where}: missing key 'input' or 'output'")
        pair = (
            validate_grid(ex["input"], f"{where} input", max_grid),
            validate_grid(ex["output"], f"{where} output", max_grid),
        )
        if sample.max_cells is None or max(pair[0].size, pair[1].size) <= sample.max_cells:
            keep.append((i, pair))
    return [p for _, p in sorted(keep, key=lambda x: x[0])]


@dataclass
class Layout:
    """Where a re-arc source's task files are: ``(task id, origin, bytes)`` on demand."""

    path: Path
    kind: str  # "folder" or "zip"
    names: dict[str, str]  # task id -> member or file path
    metadata: str | None
    generation: str | None

    def read(self, name: str) -> bytes:
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as z:
                return read_member(z, name, self.path)
        return read_file(name)

    def tasks(self) -> Iterator[tuple[str, str, bytes]]:
        """Every task file: id, origin for messages, raw bytes (one open of the zip)."""
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as z:
                for tid, member in sorted(self.names.items()):
                    yield tid, f"{self.path}:{member}", read_member(z, member, self.path)
            return
        for tid, f in sorted(self.names.items()):
            yield tid, f, read_file(f)


def _zip_infos(path: Path) -> list[zipfile.ZipInfo]:
    """The members of the zip at ``path``, every one checked (:func:`_unsafe_member`) before
    any is read; the archive refused whole, in one line, otherwise."""
    fix = "give re-arc's own zip or its folder (fix data.source)"
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise InvalidTaskError(f"{path}: a broken zip archive ({e}); {fix}") from None
    if len(infos) > MAX_MEMBERS:
        raise InvalidTaskError(f"{path}: {len(infos)} members, over {MAX_MEMBERS}; {fix}")
    total = sum(i.file_size for i in infos)
    if total > MAX_ARCHIVE_BYTES:
        raise InvalidTaskError(
            f"{path}: its members declare {total} bytes in all, over {MAX_ARCHIVE_BYTES}; {fix}"
        )
    for info in infos:
        why = _unsafe_member(info)
        if why:
            raise InvalidTaskError(
                f"{path}: member {short(info.filename)} is {why}; refusing the whole archive "
                f"(it is not re-arc's re_arc.zip): {fix}"
            )
    return infos


def find_layout(path: Path) -> Layout | None:
    """re-arc's layout at ``path``: a zip, a folder holding ``tasks/`` (or ``re_arc/tasks/``);
    ``None`` when ``path`` is neither (a plain folder of task files is read elsewhere)."""
    if path.is_file() and zipfile.is_zipfile(path):
        infos = _zip_infos(path)
        members = [i.filename for i in infos]
        names: dict[str, str] = {}
        for m in members:
            hit = _TASK.search(m)
            if hit:
                task_id_of(hit.group(1), f"{path}: member {short(m)}")
                if hit.group(1) in names:
                    raise InvalidTaskError(
                        f"{path}: task {hit.group(1)} twice ({names[hit.group(1)]} and {m}); "
                        "give a zip with one tasks/ folder (fix data.source)"
                    )
                names[hit.group(1)] = m
        if not names:
            raise InvalidTaskError(
                f"{path}: a zip without tasks/<task_id>.json files (re-arc's re_arc.zip has "
                "re_arc/tasks/); fix data.source"
            )
        meta = next((m for m in members if _META.search(m)), None)
        gen = next((m for m in members if _GENERATION.search(m)), None)
        return Layout(path, "zip", names, meta, gen)
    if not path.is_dir():
        return None
    for root in (path, path / "re_arc"):
        tasks = root / "tasks"
        if tasks.is_dir():
            files = sorted(tasks.glob("*.json"))
            if not files:
                raise InvalidTaskError(f"{tasks}: no <task_id>.json files (fix data.source)")
            meta, gen = root / "metadata.json", root / "generation.json"
            return Layout(
                root,
                "folder",
                {task_id_of(f.stem, str(f)): str(f) for f in files},
                str(meta) if meta.is_file() else None,
                str(gen) if gen.is_file() else None,
            )
    return None


def read_layout(
    layout: Layout, sample: Sample, on_invalid: str, max_grid: int
) -> tuple[list[tuple[str, list, str]], list[str], str, str]:
    """``([(task id, pairs, origin)], skipped ids, sha256, version)`` of a re-arc source.

    The checksum covers every task file's name and bytes (the same for the folder and its zip)
    and ``metadata.json``; the version is the generating checkout's (``generation.json``) when
    the workflow made it, else ``re-arc:<sha256 of metadata.json>`` (re-arc's own release).
    """
    h = hashlib.sha256()
    out, skipped = [], []
    for tid, origin, data in layout.tasks():
        h.update(f"{tid}.json".encode() + b"\0" + data)
        try:
            obj = parse_task_json(data, f"{origin}: task {tid}")
            if not is_example_list(obj):
                raise InvalidTaskError(
                    f"{origin}: task {tid}: a re-arc task file is a non-empty JSON list of "
                    "{'input', 'output'} examples"
                )
            pairs = sample_examples(obj, tid, origin, sample, max_grid)
        except InvalidTaskError as e:
            if on_invalid == "error":
                raise InvalidTaskError(f"{e} (fix the file or set data.on_invalid: skip)") from e
            skipped.append(tid)
            continue
        out.append((tid, pairs, origin))
    meta = layout.read(layout.metadata) if layout.metadata else b""
    h.update(b"metadata.json\0" + meta)
    version = "re-arc:" + (hashlib.sha256(meta).hexdigest()[:12] if meta else "no-metadata")
    if layout.generation:
        version = generation_version(layout) or version
    return out, skipped, h.hexdigest(), version


def generation_version(layout: Layout) -> str | None:
    """The ``version`` the workflow's ``generation.json`` records (None: none recorded)."""
    gen = str(layout.generation)
    where = f"{layout.path}:{gen}" if layout.kind == "zip" else gen
    rec = parse_task_json(layout.read(gen), where)
    version = rec.get("version") if isinstance(rec, dict) else None
    if not isinstance(rec, dict) or not isinstance(version, str | None):
        got = type(version).__name__ if isinstance(rec, dict) else f"a {type(rec).__name__}"
        raise InvalidTaskError(
            f"{where}: not the workflow's generation record (an object whose 'version' is a "
            f"string; got {got}); remove it or generate re-arc again (fix data.source)"
        )
    return version


def sample_pairs(
    pairs: list[tuple[np.ndarray, np.ndarray]], task_id: str, sample: Sample
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`sample_examples` for pairs already read (an ARC-format task's ``train + test``)."""
    if sample.n is None or len(pairs) <= sample.n:
        return pairs
    order = sample_order(len(pairs), sample.seed, task_id)
    keep: list[int] = []
    for i in map(int, order):
        if len(keep) >= sample.n:
            break
        a, b = pairs[i]
        if sample.max_cells is None or max(a.size, b.size) <= sample.max_cells:
            keep.append(i)
    return [pairs[i] for i in sorted(keep)]
