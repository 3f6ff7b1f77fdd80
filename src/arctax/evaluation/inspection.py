"""What a checkpoint file is, read without unpickling it (standard library only, no torch).

:func:`inspect_checkpoint` reads the pickle opcodes of a torch file (``data.pkl`` inside the zip
archive torch writes, or the legacy stream) with :func:`pickletools.genops`, which parses and
executes nothing. From the globals the pickle would import and the strings it holds it tells a
missing, empty, truncated or corrupt file, a file that is not a torch checkpoint, a pickle that
would run code on load, a checkpoint of the original internal codebase (``core_model.*``,
``cebr_alpha``, OmegaConf hyper-parameters) and an arctax checkpoint of a named model. It runs
in milliseconds, so the workflow can check the reference when it starts (``snakemake -n``)
instead of failing hours later in the evaluation job; :mod:`arctax.evaluation.checkpoints` uses
it before its ``torch.load(weights_only=True)``.

torch reads a checkpoint's zip with its own reader (miniz), not Python's, so :func:`torch_zip`
reads the zip directory itself and holds it to what ``torch.save`` writes, so that both readers
see the same members and no member costs more than its bytes: the end-of-directory record
exactly at the end of the file (no comment, nothing before the directory that would shift
offsets), every member stored (not compressed: no inflation, no unknown method), none
encrypted, every member's bytes inside the file and apart from the others' (no member read
twice), unique names, all in the one folder torch takes from the FIRST member's name, and the
pickle torch loads, ``<that folder>/data.pkl``, is the one read here. Its pickle is capped in
bytes (:data:`MAX_PICKLE_BYTES`) and opcodes (:data:`MAX_PICKLE_OPS`: unpickling allocates at
most ~100 bytes per opcode, measured), so the structure ``torch.load`` builds stays small.
"""

from __future__ import annotations

import os
import pickletools
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from arctax.settings import MODEL_NAMES

# Top-level state_dict names that only the original internal codebase has.
ORIGINAL_PREFIXES = ("core_model.", "cebr_", "gauge_")
# Globals a weights-only torch checkpoint may import (torch's own allowlist is the authority
# when the file is loaded; this is the fast pre-check).
SAFE_GLOBALS = {
    "collections.OrderedDict",
    "collections.Counter",
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
    "builtins.range",
    "builtins.complex",
    "builtins.bytearray",
    "_codecs.encode",
}
WATCHED = ("model_class", "model_code_sha256")  # hyper-parameters read by value
NOT_STR = "<not a string>"
NOT_PUSHES = {"BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE", "FRAME", "PROTO", "MARK"}
# data.pkl holds the structure, not the tensors; measured: a full-size champion with its Adam
# state (375 tensors) is 43 KB and 15k opcodes. Unpickling makes at most ~100 B an opcode.
MAX_PICKLE_BYTES = 8 * 2**20
MAX_PICKLE_OPS = 1_000_000
MAX_MEMBERS = 100_000  # a Lightning checkpoint has one member per tensor storage (+ 6)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of torch's pre-1.6 (non-zip) format
KINDS = (
    "arctax", "original", "foreign", "missing", "not_a_file", "empty", "truncated",
    "corrupt", "not_torch", "unsafe",
)  # fmt: skip


@dataclass(frozen=True)
class Inspection:
    """What :func:`inspect_checkpoint` found: a ``kind`` (one of :data:`KINDS`) and why."""

    path: str
    kind: str
    detail: str
    model_name: str | None = None
    model_class: str | None = None  # the class it asks for (imported only if the config names it)
    model_code_sha256: str | None = None
    unsafe_globals: tuple[str, ...] = field(default=())

    @property
    def is_arctax(self) -> bool:
        """True for a checkpoint arctax can load and run."""
        return self.kind == "arctax"


class _Scan:
    """Globals and strings of one pickle stream, in order (nothing is executed)."""

    def __init__(self) -> None:
        self.globals: list[str] = []
        self.strings: list[str] = []
        self.first_int: int | None = None
        # the values pushed right after each WATCHED key string (a string, None, or NOT_STR)
        self.after: dict[str, list[str | None]] = {}


def _scan(data: bytes | memoryview, start: int = 0) -> tuple[_Scan, int]:
    """Scan one pickle starting at ``start``; return what it holds and where it ends.

    Raises ``ValueError`` (or ``EOFError``) when the bytes are not a complete pickle.
    """
    import io

    stream = io.BytesIO(data)
    stream.seek(start)
    scan = _Scan()
    memo: dict[int, str] = {}
    recent: list[str | None] = []  # the values pushed last (strings, or None for anything else)
    end = start
    watching: str | None = None
    for n_ops, (op, arg, pos) in enumerate(pickletools.genops(stream)):
        if n_ops > MAX_PICKLE_OPS:
            raise ValueError(f"over {MAX_PICKLE_OPS} pickle opcodes (a pickle bomb?)")
        name = op.name
        if watching is not None and name not in NOT_PUSHES:
            if name == "NONE":
                got: str | None = None
            elif "UNICODE" in name or name in ("BINSTRING", "SHORT_BINSTRING", "STRING"):
                got = str(arg)
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                got = memo.get(int(arg), NOT_STR)
            else:
                got = NOT_STR
            scan.after.setdefault(watching, []).append(got)
            watching = None
        value: str | None = None
        pushed = True
        if "UNICODE" in name or name in ("BINSTRING", "SHORT_BINSTRING", "STRING"):
            value = str(arg)
            scan.strings.append(value)
            watching = value if value in WATCHED else None
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            value = memo.get(int(arg))
            if value is not None:
                scan.strings.append(value)
                watching = value if value in WATCHED else None
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            if recent and recent[-1] is not None:
                memo[int(arg)] = recent[-1]
            pushed = False
        elif name == "MEMOIZE":
            if recent and recent[-1] is not None:
                memo[len(memo)] = recent[-1]
            else:
                memo[len(memo)] = ""  # keep indices aligned
            pushed = False
        elif name == "GLOBAL":
            scan.globals.append(str(arg).replace(" ", "."))
        elif name == "STACK_GLOBAL":
            if len(recent) >= 2 and recent[-2] is not None and recent[-1] is not None:
                scan.globals.append(f"{recent[-2]}.{recent[-1]}")
            else:
                scan.globals.append("<unknown>")
        elif name in ("LONG1", "LONG4", "INT", "BININT", "BININT1", "BININT2", "LONG"):
            if scan.first_int is None and not scan.strings:
                scan.first_int = int(arg)
        elif name == "STOP":
            end = pos + 1
            break
        if pushed:
            recent = [*recent[-1:], value]
    else:
        raise EOFError("pickle ends before its STOP opcode")
    return scan, end


def _unsafe(globals_: list[str]) -> list[str]:
    bad = []
    for g in globals_:
        if g.startswith("torch.") or g in SAFE_GLOBALS:
            continue
        if g not in bad:
            bad.append(g)
    return bad


def _classify(path: str, scan: _Scan) -> Inspection:
    """Kind of a well-formed torch pickle from its globals and strings."""
    strings = scan.strings
    omega = [g for g in scan.globals if g.startswith("omegaconf")]
    original_keys = [s for s in strings if s.startswith(ORIGINAL_PREFIXES)]
    if original_keys or omega:
        what = ", ".join(original_keys[:2]) or "its structure"
        detail = f"a checkpoint of the original internal codebase ({what}"
        if omega:  # its hyper-parameters are OmegaConf objects: unpickling them runs code
            detail += f"; OmegaConf objects ({omega[0]}), which cannot load under weights_only=True"
        return Inspection(path, "original", detail + ")")
    unsafe = _unsafe(scan.globals)
    if unsafe:
        return Inspection(
            path,
            "unsafe",
            f"it pickles {', '.join(unsafe[:3])}, which would run code when loaded "
            "(only tensors and plain types load under weights_only=True)",
            unsafe_globals=tuple(unsafe),
        )
    if "model_name" in strings:
        i = strings.index("model_name")
        name = strings[i + 1] if i + 1 < len(strings) else None
        # a built-in's name, or any model with arctax's hyper-parameters (models.<name>.class)
        ours = name in MODEL_NAMES or {"model_cfg", "trial69", "model_class"} <= set(strings)
        if name and ours and "state_dict" in strings:
            return _arctax(path, name, scan)
    has = [k for k in ("state_dict", "hyper_parameters") if k in strings]
    return Inspection(
        path,
        "foreign",
        "a PyTorch file, but not an arctax checkpoint "
        f"({'has ' + ' and '.join(has) if has else 'no state_dict'}; "
        "no hyper_parameters.model_name of an arctax model)",
    )


def _arctax(path: str, name: str, scan: _Scan) -> Inspection:
    """An arctax checkpoint of ``name``, with the class it asks for (none: a built-in)."""
    found = {k: set(scan.after.get(k, [None])) for k in WATCHED}
    odd = [k for k, v in found.items() if len(v) > 1 or NOT_STR in v]
    if odd:
        return Inspection(
            path, "foreign", f"a PyTorch file whose hyper_parameters.{odd[0]} is not one string "
            f"({', '.join(sorted(map(repr, found[odd[0]])))}); not an arctax checkpoint",
        )  # fmt: skip
    cls, sha = (next(iter(found[k])) for k in WATCHED)
    detail = f"an arctax checkpoint of {name}"
    if cls is not None:
        detail += (
            f" that asks for class {cls!r} (imported only if the config names it: "
            f"models.{name}.class)"
        )
    return Inspection(
        path, "arctax", detail, model_name=name, model_class=cls, model_code_sha256=sha
    )


def inspect_checkpoint(path: str | Path) -> Inspection:
    """Tell what ``path`` is without unpickling it (see the module docstring)."""
    p = Path(path)
    s = str(p)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return Inspection(s, "missing", "not found (no such file)")
    except OSError as e:
        return Inspection(s, "missing", f"cannot be read ({e.strerror})")
    if not stat.S_ISREG(mode):
        return Inspection(s, "not_a_file", f"it is {_kind(mode)}, not a file")
    if p.stat().st_size == 0:
        return Inspection(s, "empty", "the file is empty (0 bytes)")
    with open(p, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return _inspect_zip(p)
    if head.startswith(b"\x80"):
        return _inspect_pickle(p)
    return Inspection(
        s, "not_torch", f"not a PyTorch checkpoint (it starts with {head!r}, not a zip or pickle)"
    )


def _kind(mode: int) -> str:
    """A non-regular file in words (as :func:`arctax.io.file_kind`, which this torch-free,
    arctax-free module does not import)."""
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device (such as /dev/zero)"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "not a regular file"


class ZipRefused(ValueError):
    """The zip is not one ``torch.save`` writes; ``kind`` is the :data:`KINDS` entry."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True)
class Member:
    """One member of a checkpoint's zip: its name and where its (stored) bytes lie."""

    name: str
    header: int  # where its local header starts
    start: int  # where its bytes start
    size: int


_EOCD, _EOCD64, _LOC64 = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
_CENTRAL, _LOCAL = b"PK\x01\x02", b"PK\x03\x04"


def _zip64(extra: bytes, values: list[int]) -> list[int]:
    """``values`` (uncompressed size, compressed size, local offset) with those stored as
    0xFFFFFFFF taken, in order, from the zip64 extra field."""
    at = 0
    while at + 4 <= len(extra):
        tag, n = struct.unpack_from("<HH", extra, at)
        if tag == 1:
            field_ = extra[at + 4 : at + 4 + n]
            out, k = [], 0
            for v in values:
                if v == 0xFFFFFFFF:
                    if k + 8 > len(field_):
                        raise ZipRefused("corrupt", "a zip64 field shorter than it says")
                    v = struct.unpack_from("<Q", field_, k)[0]
                    k += 8
                out.append(v)
            return out
        at += 4 + n
    if 0xFFFFFFFF in values:
        raise ZipRefused("corrupt", "a zip64 size without its zip64 field")
    return values


def torch_zip(f: BinaryIO, size: int) -> tuple[list[Member], str]:
    """The members of a torch zip as both torch and Python read it, and the name of the
    pickle torch loads; :class:`ZipRefused` for anything ``torch.save`` would not write."""
    if size < 22:
        raise ZipRefused("truncated", "truncated (its zip directory is missing)")
    f.seek(size - 22)
    eocd = f.read(22)
    if eocd[:4] != _EOCD or struct.unpack_from("<H", eocd, 20)[0] != 0:
        raise ZipRefused(
            "truncated", "truncated (its zip directory is not at its end: the save was "
            "interrupted, or bytes were added after it)",
        )  # fmt: skip
    n, cd_size, cd_off = struct.unpack_from("<HII", eocd, 10)
    cd_end = size - 22
    if size >= 42:
        f.seek(size - 42)
        loc = f.read(20)
        if loc[:4] == _LOC64:
            at64 = struct.unpack_from("<Q", loc, 8)[0]
            f.seek(at64)
            rec = f.read(56)
            if rec[:4] != _EOCD64 or at64 + 56 > size - 42:
                raise ZipRefused("corrupt", "corrupt zip archive (a broken zip64 record)")
            n, cd_size, cd_off = struct.unpack_from("<QQQ", rec, 32)
            cd_end = at64
    if cd_off + cd_size != cd_end or n > MAX_MEMBERS:
        why = f"{n} members" if n > MAX_MEMBERS else "a central directory that is not where it ends"
        raise ZipRefused("corrupt", f"not a zip torch.save writes ({why})")
    f.seek(cd_off)
    cd = f.read(cd_size)
    members, names, at = [], set(), 0
    for _ in range(n):
        if cd[at : at + 4] != _CENTRAL or at + 46 > len(cd):
            raise ZipRefused("corrupt", "corrupt zip archive (a broken central directory)")
        flags, method = struct.unpack_from("<HH", cd, at + 8)
        csize, usize, nlen, elen, clen = struct.unpack_from("<IIHHH", cd, at + 20)
        local = struct.unpack_from("<I", cd, at + 42)[0]
        name = cd[at + 46 : at + 46 + nlen].decode("utf-8", "replace")
        usize, csize, local = _zip64(
            cd[at + 46 + nlen : at + 46 + nlen + elen], [usize, csize, local]
        )
        at += 46 + nlen + elen + clen
        if flags & 1 or method != 0 or csize != usize:
            what = "encrypted" if flags & 1 else f"compressed (method {method})"
            raise ZipRefused(
                "corrupt", f"its member {name[:80]!r} is {what}; torch.save stores every "
                "member as it is, so this file was not written by it (a zip bomb?)",
            )  # fmt: skip
        if name in names:
            raise ZipRefused("corrupt", f"its member {name[:80]!r} is there twice")
        names.add(name)
        f.seek(local)
        head = f.read(30)
        if head[:4] != _LOCAL:
            raise ZipRefused("corrupt", f"corrupt zip archive (member {name[:80]!r} is not there)")
        lnlen, lelen = struct.unpack_from("<HH", head, 26)
        members.append(Member(name, local, local + 30 + lnlen + lelen, usize))
    end = 0
    for m in sorted(members, key=lambda m: m.header):
        if m.header < end or m.start + m.size > cd_off:
            raise ZipRefused(
                "corrupt", f"its member {m.name[:80]!r} overlaps another or the directory "
                "(bytes read twice: a zip bomb?)",
            )  # fmt: skip
        end = m.start + m.size
    first = members[0].name if members else ""
    folder = first.split("/")[0] + "/" if "/" in first else ""
    stray = next((m.name for m in members if not folder or not m.name.startswith(folder)), None)
    pkl = folder + "data.pkl"
    if stray is not None or pkl not in names:
        shown = ", ".join(m.name[:40] for m in members[:3])
        what = (
            f"{stray[:80]!r} outside {folder!r}" if folder and stray else f"no {pkl or 'data.pkl'}"
        )
        raise ZipRefused(
            "not_torch", f"a zip archive but not a PyTorch checkpoint ({what}; holds {shown})"
        )
    return members, pkl


def _inspect_zip(p: Path) -> Inspection:
    s = str(p)
    try:
        with open(p, "rb") as f:
            members, pkl = torch_zip(f, os.fstat(f.fileno()).st_size)
            info = next(m for m in members if m.name == pkl)
            if info.size > MAX_PICKLE_BYTES:
                return Inspection(
                    s, "corrupt", f"its {pkl} declares {info.size} bytes, over the "
                    f"{MAX_PICKLE_BYTES} a checkpoint's pickle may have (a pickle bomb?)",
                )  # fmt: skip
            f.seek(info.start)
            data = f.read(info.size)
    except ZipRefused as e:
        return Inspection(s, e.kind, str(e))
    except (OSError, struct.error) as e:
        return Inspection(s, "corrupt", f"corrupt zip archive ({type(e).__name__}: {e})")
    try:
        scan, _ = _scan(data)
    except (ValueError, EOFError) as e:
        return Inspection(s, "corrupt", f"corrupt checkpoint: its data.pkl is not a pickle ({e})")
    return _classify(s, scan)


def _inspect_pickle(p: Path) -> Inspection:
    s = str(p)
    with open(p, "rb") as f:  # the pickles come first; the storages after them are never read
        data = f.read(MAX_PICKLE_BYTES)
    try:
        first, end = _scan(data)
    except (ValueError, EOFError):
        return Inspection(
            s, "corrupt", "corrupt: it starts like a pickle (byte 0x80) but is not a valid one"
        )
    if first.first_int != LEGACY_MAGIC:
        unsafe = _unsafe(first.globals)
        if unsafe:
            return _classify(s, first)
        return Inspection(
            s, "not_torch", "a plain Python pickle, not a PyTorch checkpoint (torch.save)"
        )
    try:  # legacy torch format: magic, protocol version, sys info, then the object
        for _ in range(2):
            _, end = _scan(data, end)
        obj, _ = _scan(data, end)
    except (ValueError, EOFError):
        return Inspection(s, "truncated", "truncated legacy (pre-1.6) PyTorch checkpoint")
    return _classify(s, obj)
