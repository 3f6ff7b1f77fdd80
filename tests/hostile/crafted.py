"""Crafted hostile files, one builder each (the table of docs in test_hostile_files.py):
checkpoints whose sizes, indices or zip structure lie, caches whose indices wrap, task files
and archives whose names climb out or whose JSON is deep, big or costly."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arctax.models import build_model

TINY = {
    "encoder_decoder": {
        "d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 32,
        "dropout": 0.0,
    },
    "champion": {
        "d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 32,
        "context": {"d_model": 8, "n_heads": 2},
    },
}  # fmt: skip
GIB = 2**30


def ckpt_dict(name: str = "encoder_decoder", model_cfg: dict | None = None, sd=None) -> dict:
    """A checkpoint with the layout training writes (Lightning's dict, ``model.`` prefix)."""
    cfg = model_cfg if model_cfg is not None else TINY[name]
    if sd is None:
        torch.manual_seed(0)
        sd = {f"model.{k}": v for k, v in build_model(name, TINY[name]).state_dict().items()}
    return {
        "epoch": 0, "global_step": 1, "pytorch-lightning_version": "2.6.6", "state_dict": sd,
        "hyper_parameters": {"model_name": name, "model_cfg": cfg, "trial69": {}, "k": 2,
                             "model_class": None, "model_code_sha256": None},
    }  # fmt: skip


def save(obj: Any, path: Path) -> Path:
    torch.save(obj, path)
    return path


def stride0(shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Each shape as a view of ONE stored element (stride 0): a few bytes pose as a model."""
    return {
        f"model.{k}": torch.zeros(1).expand(s) if len(s) else torch.zeros(())
        for k, s in shapes.items()
    }


def meta_shapes(name: str, cfg: dict) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in build_model(name, cfg).state_dict().items()}


# ---- zip surgery on a torch file ------------------------------------------------------------


def _central(data: bytes) -> list[int]:
    """Offsets of the central-directory headers of a small zip (no zip64 offsets needed)."""
    eocd = data.rindex(b"PK\x05\x06")
    n, _, at = struct.unpack_from("<HII", data, eocd + 10)
    out = []
    for _ in range(n):
        out.append(at)
        nlen, elen, clen = struct.unpack_from("<HHH", data, at + 28)
        at += 46 + nlen + elen + clen
    return out


def patch_members(src: Path, dst: Path, flags: int = 0, method: int | None = None) -> Path:
    """``src`` with every member's flags OR-ed (1: encrypted) or its method set, in the central
    directory and the local headers alike."""
    data = bytearray(src.read_bytes())
    for at in _central(bytes(data)):
        local = struct.unpack_from("<I", data, at + 42)[0]
        for off, f_at, m_at in ((at, 8, 10), (local, 6, 8)):
            struct.pack_into(
                "<H", data, off + f_at, struct.unpack_from("<H", data, off + f_at)[0] | flags
            )
            if method is not None:
                struct.pack_into("<H", data, off + m_at, method)
    dst.write_bytes(bytes(data))
    return dst


def broken_directory(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    at = _central(bytes(data))[0]
    data[at : at + 4] = b"XXXX"
    dst.write_bytes(bytes(data))
    return dst


def overlapping(src: Path, dst: Path) -> Path:
    """The second member points at the first one's bytes: read twice for one stored copy."""
    data = bytearray(src.read_bytes())
    first, second = _central(bytes(data))[:2]
    struct.pack_into("<I", data, second + 42, struct.unpack_from("<I", data, first + 42)[0])
    dst.write_bytes(bytes(data))
    return dst


def rezip(
    src: Path,
    dst: Path,
    *,
    order: Callable[[list[str]], list[str]] | None = None,
    extra: dict[str, bytes] | None = None,
    deflate_zeros: dict[str, int] | None = None,
    compression: int = zipfile.ZIP_STORED,
) -> Path:
    """``src``'s members written again: reordered, with ``extra`` members, or with members of
    ``n`` zero bytes deflated (a zip bomb)."""
    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members.update(extra or {})
    names = order(list(members)) if order else list(members)
    with zipfile.ZipFile(dst, "w", compression=compression, compresslevel=1) as z:
        for name in names:
            if deflate_zeros and name in deflate_zeros:
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with z.open(info, "w", force_zip64=True) as f:
                    chunk = bytes(2**24)
                    for _ in range(deflate_zeros[name] // len(chunk)):
                        f.write(chunk)
            else:
                z.writestr(name, members[name])
    return dst


def pickle_bomb(src: Path, dst: Path, n_ops: int = 1_500_000) -> Path:
    """``src`` whose data.pkl is a list of ``n_ops`` empty dicts (1 byte each, 64 B each
    unpickled): under the byte cap, over the opcode cap."""
    body = b"\x80\x02]q\x00(" + b"}" * n_ops + b"e."
    with zipfile.ZipFile(src) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
    return rezip(src, dst, extra={pkl: body})


# ---- prepared caches -----------------------------------------------------------------------


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_cache(src_dir: Path, dst_dir: Path, change: Callable[[dict], None]) -> Path:
    """A copy of the prepared test set at ``src_dir`` with its arrays changed."""
    dst_dir.mkdir(parents=True)
    a = npz_arrays(src_dir / "test.npz")
    change(a)
    np.savez_compressed(dst_dir / "test.npz", **a)
    (dst_dir / "manifest.json").write_bytes((src_dir / "manifest.json").read_bytes())
    return dst_dir


def cells_bomb(src_dir: Path, dst_dir: Path, n: int = GIB) -> Path:
    """The test set with ``cells`` replaced by ``n`` zeros, deflated: a 5 MB file, 1 GiB read."""
    dst_dir.mkdir(parents=True)
    a = npz_arrays(src_dir / "test.npz")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (n,)}
    )
    with zipfile.ZipFile(
        dst_dir / "test.npz", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
    ) as z:
        for k, v in a.items():
            if k != "cells":
                buf = io.BytesIO()
                np.lib.format.write_array(buf, v, allow_pickle=False)
                z.writestr(f"{k}.npy", buf.getvalue())
        with z.open("cells.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            chunk = bytes(2**24)
            for _ in range(n // len(chunk)):
                f.write(chunk)
    (dst_dir / "manifest.json").write_bytes((src_dir / "manifest.json").read_bytes())
    return dst_dir


def npy_shape_lie(src_dir: Path, dst_dir: Path) -> Path:
    """``cells.npy`` whose header says 2**40 cells over the few bytes it holds (numpy would
    allocate the header's shape before reading)."""
    dst_dir.mkdir(parents=True)
    a = npz_arrays(src_dir / "test.npz")
    with zipfile.ZipFile(dst_dir / "test.npz", "w") as z:
        for k, v in a.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, v, allow_pickle=False)
            raw = buf.getvalue()
            if k == "cells":
                raw = raw.replace(
                    f"({len(v)},)".encode(), b"(1099511627776,)".ljust(len(f"({len(v)},)"))
                )
            z.writestr(f"{k}.npy", raw)
    (dst_dir / "manifest.json").write_bytes((src_dir / "manifest.json").read_bytes())
    return dst_dir


# ---- task sources --------------------------------------------------------------------------

EXAMPLE = {"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}


def rearc_zip(
    path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    """A re-arc zip: two good tasks plus ``members`` (name -> bytes)."""
    good = json.dumps([EXAMPLE] * 4).encode()
    with zipfile.ZipFile(path, "w", compression=compression, compresslevel=1) as z:
        for tid in ("aaaa0001", "aaaa0002"):
            z.writestr(f"re_arc/tasks/{tid}.json", good)
        z.writestr("re_arc/metadata.json", b"{}")
        for name, data in members.items():
            z.writestr(name, data)
    return path


def task_folder(path: Path, files: dict[str, bytes]) -> Path:
    """A folder of ARC task files: two good tasks plus ``files``."""
    path.mkdir(parents=True)
    good = json.dumps({"train": [EXAMPLE, EXAMPLE], "test": [EXAMPLE]}).encode()
    for tid in ("aaaa0001", "aaaa0002"):
        (path / f"{tid}.json").write_bytes(good)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def deep_json(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def costly_json(mib: int = 64) -> bytes:
    """``mib`` MiB of ``[[],[],...]``: parsed whole it would take ~21 bytes a byte."""
    n = mib * 2**20 // 3
    return b"[" + b"[]," * (n - 1) + b"[]]"


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def link(path: Path, target: str = "/dev/zero") -> Path:
    path.symlink_to(target)
    return path
