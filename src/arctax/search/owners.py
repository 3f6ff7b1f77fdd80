"""Who runs a trial, and whether that worker is provably gone.

A worker writes its identity into each trial it claims (user attribute ``owner``: host, pid,
the pid's start time, Slurm job id, worker index). A trial left RUNNING is stale only on
proof that its owner is dead, never on a guess such as its age:
- same host: the pid is gone, or now belongs to another process (start time differs);
- another host: Slurm says the job ended (not in ``squeue``, or in a final state), or it is
  this very job id (a requeued job's earlier run);
- no owner recorded, older than ``ORPHAN_AGE_S``: the claimer died inside the claim, which
  takes milliseconds under the lock.
Anything else (Slurm unreachable, another host without Slurm) counts as alive. Optuna's own
heartbeat does this for RDB storage only, and only inside ``study.optimize``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ORPHAN_AGE_S = 120
# squeue states in which the job's processes may still run (COMPLETING: still being killed)
SLURM_LIVE = {"RUNNING", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING", "STAGE_OUT", "COMPLETING"}


def proc_start(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot, Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5); the name may hold spaces


def owner_record(worker: int) -> dict[str, Any]:
    """This process as the owner of the trials it claims (stored as trial user attributes)."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "proc_start": proc_start(pid),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "worker": worker,
        "claimed": time.time(),
    }


def pid_alive(pid: int, started: str | None) -> bool:
    """Is ``pid`` (with start time ``started``, if known) still running on this host?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    now = proc_start(pid)
    return started is None or now is None or now == started


def slurm_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """``{job id: squeue state}`` for the jobs Slurm still knows; None when Slurm cannot say.

    A job missing from the answer ended long enough ago for the controller to forget it
    (``MinJobAge``): dead.
    """
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    try:
        res = subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%A %T", "-j", ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        # one unknown id is an error for squeue ("Invalid job id specified"); several are not
        return {} if "Invalid job id" in res.stderr else None
    return dict(line.split()[:2] for line in res.stdout.splitlines() if line.strip())


def dead_reason(
    owner: Mapping[str, Any] | None,
    me: Mapping[str, Any],
    states: Mapping[str, str] | None,
    started: float | None,
) -> str | None:
    """Why the ``owner`` of a RUNNING trial is dead, or None if it may be alive.

    ``owner``: the trial's ``owner`` attribute (an :func:`owner_record`, None if never set);
    ``me``: this worker's record; ``states``: :func:`slurm_states` of the owners' jobs;
    ``started``: the trial's start (epoch seconds).
    """
    owner = owner or {}
    host, pid = owner.get("host"), owner.get("pid")
    if host is None:
        age = time.time() - (started or time.time())
        if age > ORPHAN_AGE_S:
            return f"no owner recorded after {age:.0f} s (its worker died while claiming it)"
        return None
    if host == me["host"] and pid is not None:
        if pid_alive(int(pid), owner.get("proc_start")):
            return None
        return f"its worker (pid {pid} on {host}) is gone"
    job = owner.get("slurm_job_id")
    if not job:
        return None  # another host, no Slurm: nothing can prove it dead
    if job == me["slurm_job_id"]:
        return f"its worker was an earlier run of this Slurm job {job} (requeued)"
    if states is None:
        return None
    state = states.get(job)
    if state is None:
        return f"its worker's Slurm job {job} has ended"
    if state not in SLURM_LIVE:
        return f"its worker's Slurm job {job} is {state}"
    return None
