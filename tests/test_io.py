"""Atomic writes: whole files or none, with the permissions a plain open() would give."""

import os
import stat

import pytest

from arctax.io import atomic_write, atomic_write_text, write_json


def test_mode_follows_umask_not_mkstemp(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a" / "x.json", {"k": 1})
        os.umask(0o002)
        atomic_write_text(tmp_path / "y.txt", "hi")
    finally:
        os.umask(old)
    # mkstemp's 0600 would hide shared results from the user's group on a cluster
    assert stat.S_IMODE((tmp_path / "a" / "x.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "y.txt").stat().st_mode) == 0o664
    assert (tmp_path / "a" / "x.json").read_text() == '{\n  "k": 1\n}\n'


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def half_then_crash(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise KeyboardInterrupt  # a job killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_torch_saves_of_the_same_object_have_the_same_bytes(tmp_path):
    """A checkpoint's bytes (and sha256) do not depend on the temp file it went through: torch
    names the zip's folder after a file name, so a save by name differs on every call."""
    import torch

    from arctax.io import atomic_torch_save

    obj = {
        "w": torch.arange(6.0).reshape(2, 3),
        "epoch": 3,
        "optimizer_states": [
            {"state": {0: {"step": torch.tensor(3.0)}, 1: {"step": torch.tensor(3.0)}}}
        ],
        "path": "".join(["res", "ults/x"]),  # built at run time: not interned
        "again": "".join(["res", "ults/x"]),
    }
    atomic_torch_save(tmp_path / "a.ckpt", obj)
    atomic_torch_save(tmp_path / "sub" / "b.ckpt", obj)
    first = (tmp_path / "a.ckpt").read_bytes()
    assert first == (tmp_path / "sub" / "b.ckpt").read_bytes()
    back = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert torch.equal(back["w"], obj["w"]) and back["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    # a resumed training's state mixes keys loaded from its checkpoint (new string objects)
    # with the code's own literals: pickle writes each string object once, so unless every
    # string is interned the same content pickles to other bytes
    step = "".join(["st", "ep"])  # an equal string, another object (as torch.load makes)
    mixed = {**obj, "optimizer_states": [{"state": {0: {step: torch.tensor(3.0)},
                                                    1: {"step": torch.tensor(3.0)}}}]}  # fmt: skip
    atomic_torch_save(tmp_path / "c.ckpt", mixed)
    assert (tmp_path / "c.ckpt").read_bytes() == first
