"""The Snakemake driver's lock (arctax.lifecycle.driver, workflow/rules/driver.smk): a driver
killed outright costs a command, not an `--unlock`; a lock that cannot be proved stale stays,
with the line saying what to run. Real Snakemake runs on a two-rule workflow that includes
the project's own driver.smk (seconds each)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arctax.lifecycle.driver import (
    LOCKS,
    clear_stale_locks,
    driver_locks,
    held,
    record_owner,
    unlock_command,
)
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SNAKEFILE = f"""\
include: "{REPO}/workflow/rules/driver.smk"

rule all:
    input: "b.txt"

rule a:
    output: "a.txt"
    shell: "sleep ${{{{SLEEP_S:-0}}}}; echo a > {{output}}"

rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "cp {{input}} {{output}}"
"""
CMD = [sys.executable, "-m", "snakemake", "--cores", "1", "--rerun-incomplete"]


def start(workdir: Path, sleep_s: float) -> subprocess.Popen[str]:
    """The driver in a session of its own (killed with its job, as a rebooted node would)."""
    return subprocess.Popen(
        CMD, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, "SLEEP_S": str(sleep_s)},
    )  # fmt: skip


def run(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CMD, cwd=workdir, capture_output=True, text=True, timeout=120)


def wait_for(pred, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    return tmp_path


def owner_records(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (workdir / LOCKS).glob("arctax-owner-*.json")]


def test_a_killed_driver_costs_a_command_not_an_unlock(workdir: Path) -> None:
    driver = start(workdir, 60)
    try:
        # onstart recorded the driver as the owner of the lock files Snakemake took
        wait_for(lambda: owner_records(workdir) and (workdir / ".snakemake/incomplete").is_dir())
        (rec,) = owner_records(workdir)
        assert rec["pid"] == driver.pid and rec["host"] == socket.gethostname()
        assert sorted(rec["locks"]) == ["0.input.lock", "0.output.lock"]
        assert [lk.owner["pid"] for lk in held(driver_locks(workdir))] == [driver.pid]
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its job, as a rebooted node
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert (workdir / LOCKS / "0.input.lock").exists()  # left behind
    (lock,) = driver_locks(workdir)
    assert lock.dead == f"its driver (pid {driver.pid} on {socket.gethostname()}) is gone"
    assert held([lock]) == []
    # the same command again: one line, the lock removed, the work done
    again = run(workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "removed Snakemake's stale lock" in again.stderr
    assert f"its driver (pid {driver.pid} on" in again.stderr
    assert (workdir / "b.txt").read_text() == "a\n"
    assert not (workdir / LOCKS).exists() or not any((workdir / LOCKS).iterdir())


def test_a_lock_held_by_a_live_driver_is_left_alone(workdir: Path) -> None:
    driver = start(workdir, 60)
    try:
        wait_for(lambda: owner_records(workdir))
        second = run(workdir)
        assert second.returncode != 0
        assert "LockException" in second.stdout + second.stderr or "cannot be locked" in (
            second.stdout + second.stderr
        )
        assert "arctax:" not in second.stderr  # no line of ours: Snakemake says it
        assert owner_records(workdir)[0]["pid"] == driver.pid  # still its lock
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)


def test_a_lock_of_another_host_stays_and_the_line_says_what_to_run(workdir: Path) -> None:
    locks = workdir / LOCKS
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("a.txt\n")  # as Snakemake writes them: relative
    (locks / "0.output.lock").write_text("b.txt\na.txt\n")
    rec = record_owner(workdir, ["0.input.lock", "0.output.lock"], ["snakemake", "all"])
    owner = json.loads(rec.read_text())
    rec.write_text(json.dumps({**owner, "host": "login-2", "pid": 4242}))
    res = run(workdir)
    assert res.returncode != 0  # Snakemake's own refusal: nothing proves login-2's driver dead
    line = (
        f"arctax: Snakemake's lock of {workdir.resolve()} (the lock of snakemake pid 4242 on "
        "login-2) cannot be proved stale from here; if no snakemake runs in this folder any "
        "more, run `snakemake --cores 1 --rerun-incomplete --unlock`, then your command again"
    )
    assert line in res.stderr
    assert (locks / "0.input.lock").exists()
    # on a Slurm node, a driver that ran inside a Slurm job Slurm no longer knows is dead
    rec.write_text(json.dumps({**owner, "host": "login-2", "slurm_job_id": "999999999"}))
    if subprocess.run(["which", "squeue"], capture_output=True).returncode == 0:
        states = driver_locks(workdir)[0].dead
        assert states in (None, "its driver's Slurm job 999999999 has ended")


def test_a_lock_without_an_owner_is_never_removed(workdir: Path) -> None:
    locks = workdir / LOCKS
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x\n")
    lines = clear_stale_locks(workdir, [sys.executable, "-m", "snakemake", "all", "-j", "2"])
    assert (locks / "0.input.lock").exists()
    assert lines == [
        f"arctax: Snakemake's lock of {workdir.resolve()} (no owner recorded) cannot be proved "
        "stale from here; if no snakemake runs in this folder any more, run "
        "`snakemake all -j 2 --unlock`, then your command again"
    ]


def test_unlock_command_keeps_the_arguments() -> None:
    assert unlock_command(["/x/bin/snakemake", "all", "--profile", "p q"]) == (
        "snakemake all --profile 'p q' --unlock"
    )
