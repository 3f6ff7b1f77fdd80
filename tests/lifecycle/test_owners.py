"""An owner is dead only on proof (arctax.lifecycle.owners): a pid gone or reused on this host,
a Slurm job ended or requeued; anything unprovable counts as alive."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from arctax.lifecycle.owners import dead_reason, owner_record, pid_alive, proc_start

HOST = socket.gethostname()


def a_dead_pid() -> tuple[int, str | None]:
    """The pid and start time of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = proc_start(p.pid)
    p.kill()
    p.wait()
    return p.pid, started


def test_owner_record_names_this_process() -> None:
    rec = owner_record(worker=3)
    assert (rec["host"], rec["pid"], rec["worker"]) == (HOST, os.getpid(), 3)
    assert rec["proc_start"] == proc_start(os.getpid()) is not None


def test_same_host_a_live_pid_is_alive_a_gone_one_dead() -> None:
    me = owner_record()
    assert dead_reason(owner_record(), me) is None  # this very process
    pid, started = a_dead_pid()
    assert not pid_alive(pid, started)
    reason = dead_reason({"host": HOST, "pid": pid, "proc_start": started}, me, role="driver")
    assert reason == f"its driver (pid {pid} on {HOST}) is gone"


def test_a_reused_pid_is_told_by_its_start_time() -> None:
    me = owner_record()
    mine = {"host": HOST, "pid": os.getpid(), "proc_start": "1"}  # another process's start
    assert dead_reason(mine, me) == f"its owner (pid {os.getpid()} on {HOST}) is gone"


def test_another_host_is_dead_only_by_slurm() -> None:
    me = {"host": HOST, "pid": 1, "slurm_job_id": "7"}
    there = {"host": "node-9", "pid": 123, "proc_start": "5"}
    assert dead_reason(there, me) is None  # no Slurm job: nothing can prove it
    job = {**there, "slurm_job_id": "41"}
    assert dead_reason(job, me, {"41": "RUNNING"}) is None
    assert dead_reason(job, me, {"41": "COMPLETING"}) is None  # still being killed
    assert dead_reason(job, me, None) is None  # Slurm could not say
    assert dead_reason(job, me, {"41": "CANCELLED"}) == "its owner's Slurm job 41 is CANCELLED"
    assert dead_reason(job, me, {}) == "its owner's Slurm job 41 has ended"
    requeued = {**there, "slurm_job_id": "7"}
    assert dead_reason(requeued, me, {"7": "RUNNING"}, role="worker") == (
        "its worker was an earlier run of this Slurm job 7 (requeued)"
    )


def test_nothing_recorded_proves_nothing() -> None:
    assert dead_reason({}, owner_record()) is None
