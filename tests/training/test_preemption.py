"""A stop signal to the whole process group, as scancel, preemption and GNU timeout send it.

They signal every process of the job step, DataLoader workers included. torch's SIGTERM
handler in a worker exits on any sender but its parent, so before the fix the trainer died
with "DataLoader worker (pid ...) is killed by signal: Terminated" (exit 1) instead of the
documented stop at the next batch (exit 75) and exact resume. With ``num_workers: 2`` (the
default config) the group signal must give exactly what a signal to the trainer alone gives.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arctax.data.datamodule import ARCDataModule
from arctax.lifecycle import STOPPED_EXIT
from tests.conftest import REPO, tiny_overrides

CODE = (
    "import json, sys; from arctax.settings import load_settings\n"
    "from arctax.training.train import train\n"
    "o = json.loads(sys.argv[1])\n"
    "train(load_settings(overrides=o), 'encoder_decoder', 307, *sys.argv[2:5])\n"
)


def val_losses(path: Path) -> list[float]:
    with path.open() as f:
        return [float(r["val_loss"]) for r in csv.DictReader(f)]


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the DataLoader workers of a trainer)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_leftover_trainings():
    """A failed test leaves no training (or its workers) running behind it."""
    yield
    while STARTED:
        proc = STARTED.pop()
        with contextlib.suppress(ProcessLookupError):  # the group is gone: nothing left
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start(
    overrides: dict, data: Path, out: Path, state: Path, *more: Path, code: str = CODE
) -> subprocess.Popen:
    """A training in a process group of its own (as a Slurm job step is), output to a pipe;
    ``code`` runs with the overrides then ``data``, ``out``, ``state`` and ``more`` as argv."""
    args = [str(p) for p in (data, out, state, *more)]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(overrides), *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}"),  # this checkout
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    STARTED.append(proc)
    return proc


def test_workers_drop_stop_signals_from_others_and_obey_their_trainer(tiny_data):
    """The mechanism, on a plain loader: a SIGTERM or SIGUSR1 from another process (the job
    step's group) leaves each worker alive; a SIGTERM from its trainer (``Process.terminate``,
    as the DataLoader's shutdown and multiprocessing's exit handler send it) ends it. With the
    signals ignored outright, a trainer exiting with live workers hung in that exit handler."""
    dm = ARCDataModule(tiny_data, "encoder_decoder", 8, num_workers=2)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it)
    workers = list(it._workers)
    try:
        for w in workers:
            for sig in ("TERM", "USR1"):  # sent by `kill`, a process that is not the parent
                subprocess.run(["kill", f"-{sig}", str(w.pid)], check=True)
        time.sleep(1.0)
        assert all(w.is_alive() for w in workers), "a worker died of a signal not its trainer's"
        for w in workers:
            w.terminate()
        for w in workers:
            w.join(timeout=30)  # bounded: a loaded machine
        assert [w.exitcode for w in workers] == [0, 0], "a worker ignored its trainer's SIGTERM"
    finally:
        it._shutdown_workers()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_group_signal_with_workers_stops_exits_75_and_resumes_exactly(tiny_data, tmp_path, sig):
    o = tiny_overrides(max_epochs=200, num_workers=2)
    out, state = tmp_path / "out", tmp_path / "state"
    proc = start(o, tiny_data, out, state)
    deadline = time.monotonic() + 120
    while not ((state / "last.ckpt").exists() and len(children(proc.pid)) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.1)
    workers = children(proc.pid)
    time.sleep(0.5)  # mid-epoch, workers busy
    os.killpg(proc.pid, sig)  # every process of the group, as scancel does
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == STOPPED_EXIT, log[-3000:]
    assert f"training stopped (received {sig.name})" in log and "resumable state" in log
    assert "killed by signal" not in log
    assert not any(Path(f"/proc/{w}").exists() for w in workers), "workers outlived the trainer"
    assert not out.exists() or not any(out.iterdir())  # nothing claimed as finished
    done = len(val_losses(state / "metrics.csv"))
    assert done >= 1

    o["trainer"]["max_epochs"] = done + 1
    resumed = start(o, tiny_data, out, state)
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log[-3000:]
    assert "resuming" in log
    # the uninterrupted run in a process like the interrupted one (same torch threads: the
    # test process's count differs from a fresh process's on most machines)
    straight = tmp_path / "straight"
    plain = start(o, tiny_data, straight / "out", straight / "state")
    log, _ = plain.communicate(timeout=300)
    assert plain.returncode == 0, log[-3000:]
    assert val_losses(out / "metrics.csv") == val_losses(straight / "out" / "metrics.csv")
