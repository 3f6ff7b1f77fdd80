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
"""

from __future__ import annotations

import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

MODEL_NAMES = ("champion", "encoder_decoder", "decoder_only")
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
MAX_PICKLE_BYTES = 64 * 2**20  # data.pkl holds the structure, not the tensors: KBs in practice
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
    for op, arg, pos in pickletools.genops(stream):
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
    if not p.exists():
        return Inspection(s, "missing", "not found (no such file)")
    if not p.is_file():
        return Inspection(s, "not_a_file", "it is a directory, not a file")
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


def _inspect_zip(p: Path) -> Inspection:
    s = str(p)
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                return Inspection(
                    s,
                    "not_torch",
                    f"a zip archive but not a PyTorch checkpoint (no data.pkl; holds "
                    f"{', '.join(names[:3])})",
                )
            size = z.getinfo(pkl).file_size
            if size > MAX_PICKLE_BYTES:  # declared; read() stops at the declared size
                return Inspection(
                    s, "corrupt", f"its {pkl} declares {size} bytes uncompressed, over the "
                    f"{MAX_PICKLE_BYTES} a checkpoint's pickle may have (a zip bomb?)",
                )  # fmt: skip
            data = z.read(pkl)
    except zipfile.BadZipFile:
        return Inspection(
            s, "truncated", "truncated (its zip directory is missing: the save was interrupted)"
        )
    except (OSError, EOFError, ValueError) as e:  # a CRC error, a cut member
        return Inspection(s, "corrupt", f"corrupt zip archive ({type(e).__name__}: {e})")
    try:
        scan, _ = _scan(data)
    except (ValueError, EOFError) as e:
        return Inspection(s, "corrupt", f"corrupt checkpoint: its data.pkl is not a pickle ({e})")
    return _classify(s, scan)


def _inspect_pickle(p: Path) -> Inspection:
    s = str(p)
    data = p.read_bytes()
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
