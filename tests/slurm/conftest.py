"""A session-scoped local Slurm cluster (scripts/local-slurm) for the tests in this folder.

A stopped test run never poisons the next one: the session holds a lock (one session uses the
cluster at a time), starts from a clean slate (what an earlier, interrupted session left —
its snakemake processes and its Slurm jobs, by name prefix — is stopped, and the node idle
and accounting answering are awaited), and cleans up the same way at its end and when it is
interrupted (SIGTERM, SIGHUP or Ctrl-C: its snakemake processes are stopped with their jobs).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slurm_utils import (
    CANNOT_RUN,
    LOCKED_BY,
    SCRIPT,
    TEST_PREFIX,
    UP_TIMEOUT_S,
    clean_slate,
    local_slurm,
    skip_or_fail,
)

LOCK = Path(os.environ.get("LOCAL_SLURM_TEST_LOCK", "/tmp/arctax-slurm-tests.lock"))
LOCK_WAIT_S = 3600


def _take_lock() -> object | None:
    """The session's lock on the cluster; waits (saying so) while another session holds it."""
    if os.environ.get(LOCKED_BY):  # our parent session holds it and runs us
        return None
    f = LOCK.open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"\nslurm tests: waiting for another session's lock on {LOCK}", file=sys.stderr)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another Slurm test session held {LOCK} for {LOCK_WAIT_S} s")
                time.sleep(1)
    os.environ[LOCKED_BY] = str(os.getpid())
    return f


_capture: list[Any] = []  # pytest's capture manager, to print past it


def _report(when: str, done: list[str]) -> None:
    if not done:
        return
    line = f"\nslurm tests ({when}): {'; '.join(done)}"  # what was cleaned up is news
    if _capture:
        with _capture[0].global_and_fixture_disabled():
            print(line, file=sys.stderr, flush=True)
    else:  # after pytest ended (atexit)
        print(line, file=sys.__stderr__, flush=True)


_finished = []  # set when the session cleaned up after itself


def _at_exit() -> None:
    """An interrupted session (Ctrl-C, SIGTERM, SIGHUP, a failed fixture) cleans up here."""
    _capture.clear()
    if not _finished and local_slurm("status").returncode == 0:
        _report("interrupted", clean_slate())


_signals: list[str] = []  # the signal that stopped the session, if one did


def _interrupted(signum: int, frame: object) -> None:
    # As Ctrl-C: pytest stops, runs the fixtures' teardown and exits normally (atexit as well).
    _signals.append(signal.Signals(signum).name)
    raise KeyboardInterrupt(f"received {_signals[-1]}")


@pytest.fixture(scope="session")
def slurm_cluster(pytestconfig: pytest.Config) -> Iterator[None]:
    """Brings the cluster up for the session (stops it only if this session started it), from
    a clean slate to a clean slate."""
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        _capture[:] = [capture]
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing")
    lock = _take_lock()
    was_up = local_slurm("status").returncode == 0
    if not was_up:
        try:
            res = local_slurm("up", timeout=UP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            skip_or_fail(f"scripts/local-slurm up took more than {UP_TIMEOUT_S} s")
        if res.returncode == CANNOT_RUN:
            skip_or_fail(res.stderr.strip() or "local-slurm cannot run here (exit 77)")
        assert res.returncode == 0, f"local-slurm up failed:\n{res.stdout}\n{res.stderr}"
    os.environ.setdefault("SBATCH_JOB_NAME", f"{TEST_PREFIX}_sbatch")  # the tests' own sbatch
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _interrupted)
    atexit.register(_at_exit)
    _report("before the session", clean_slate())
    yield
    _report(f"interrupted by {_signals[0]}" if _signals else "after the session", clean_slate())
    _finished.append(True)
    if not was_up:
        local_slurm("down", timeout=120)
    if lock is not None:
        lock.close()
