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


# ---- bounded reads (issue 36) ---------------------------------------------------------------


def _finishes(fn, timeout: float = 10.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not return."""
    import threading

    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "hung: a FIFO or a device was read"
    return out


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory"])
def test_only_regular_files_are_read_and_the_kind_is_named(tmp_path, kind):
    from arctax.io import ReadError, file_sha256, read_bytes, read_json

    p = tmp_path / "x"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "dev_zero":
        p.symlink_to("/dev/zero")
    else:
        p.mkdir()
    words = {
        "fifo": "a named pipe (FIFO)",
        "dev_zero": "a character device",
        "directory": "a directory",
    }
    for fn in (lambda: file_sha256(p), lambda: read_bytes(p, 10), lambda: read_json(p)):
        got = _finishes(fn)
        assert isinstance(got.get("error"), ReadError), got
        assert str(got["error"]).startswith(f"{p}: {words[kind]}")


def test_read_bytes_refuses_a_file_over_its_cap(tmp_path):
    from arctax.io import ReadError, read_bytes

    (tmp_path / "f").write_bytes(b"x" * 11)
    assert read_bytes(tmp_path / "f", 11) == b"x" * 11
    with pytest.raises(ReadError, match="11 bytes, over the 10 a file may have"):
        read_bytes(tmp_path / "f", 10)


def test_json_is_refused_before_parsing_when_deep_costly_or_a_huge_int():
    from arctax.io import MAX_JSON_COST, ReadError, json_cost, loads_json

    assert loads_json(b'{"a": ["]]]]", 1]}', "f") == {"a": ["]]]]", 1]}  # strings never count
    with pytest.raises(ReadError, match=r"^f: JSON nested deeper than 32 levels"):
        loads_json(b"[" * 10**5 + b"]" * 10**5, "f")
    assert loads_json(b"[" * 32 + b"]" * 32, "f") is not None
    costly = b"[" + b"[]," * (MAX_JSON_COST // 128) + b"[]]"
    assert json_cost(costly) > MAX_JSON_COST
    with pytest.raises(ReadError, match=r"would take up to .* over the 400 MiB"):
        loads_json(costly, "f")
    with pytest.raises(ReadError, match=r"^f: not valid JSON .*4300 digits"):
        loads_json(b"[" + b"9" * 5000 + b"]", "f")


def test_json_cost_bounds_what_json_loads_allocates():
    """The estimate is an upper bound on the memory reading and parsing takes (the bytes, their
    decoding, the objects), for the shapes that cost the most per byte (tracemalloc)."""
    import json
    import tracemalloc

    from arctax.io import json_cost

    n = 20_000
    shapes = ["[]", "{}", "[0]", "300", "0.5", '"ab"', '"\U0001f600"', '"\U0001f600ab"',
              '{"a":0}', "1" * 18, '"' + "\U0001f600" + "a" * 5000 + '"']  # fmt: skip
    for item in shapes:
        text = ("[" + ",".join([item] * (n if len(item) < 100 else 20)) + "]").encode()
        tracemalloc.start()
        value = json.loads(bytes(text))  # the bytes as read count too
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del value
        assert peak <= json_cost(text), (item[:10], peak / len(text))


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
