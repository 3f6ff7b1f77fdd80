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
