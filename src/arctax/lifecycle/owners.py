"""Who owns a piece of work, and whether that owner is provably gone.

An owner is a process, recorded where its work is (a sweep trial's user attribute, the
Snakemake driver's lock folder, later a job's state): :func:`owner_record` gives its host,
pid, the pid's start time and Slurm job id. An owner is dead only on proof, never on a guess
such as its age (:func:`dead_reason`):

- same host: the pid is gone, or now belongs to another process (start time differs);
- another host: Slurm says its job ended (not in ``squeue``, or in a final state), or its
  job is this very job (a requeued job's earlier run).

Anything else (Slurm unreachable, another host without a Slurm job) counts as alive: the
caller waits, or says what a person must check. Torch-free.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# squeue states in which the job's processes may still run (COMPLETING: still being killed)
SLURM_LIVE = {"RUNNING", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING", "STAGE_OUT", "COMPLETING"}
_ASK = object()  # dead_reason's default: ask squeue when the proof needs it


def proc_start(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot, Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5); the name may hold spaces


def owner_record(**extra: Any) -> dict[str, Any]:
    """This process as an owner: host, pid, its start time, Slurm job id, since (epoch s),
    and ``extra`` (what the caller adds: a worker index, the lock files it holds)."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "proc_start": proc_start(pid),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "since": time.time(),
        **extra,
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
    owner: Mapping[str, Any],
    me: Mapping[str, Any] | None = None,
    states: Any = _ASK,
    role: str = "owner",
) -> str | None:
    """Why ``owner`` (an :func:`owner_record`) is dead, or None if it may be alive.

    ``me``: the asking process's record (default: this process); ``states``: the
    :func:`slurm_states` of the owners' jobs when the caller asked Slurm once for many
    (default: ask now, if the proof needs it; None: Slurm could not say). ``role`` names the
    owner in the reason ("its worker", "its driver").
    """
    me = me if me is not None else owner_record()
    host, pid = owner.get("host"), owner.get("pid")
    if host is None:
        return None  # nothing recorded to prove anything with
    if host == me["host"] and pid is not None:
        if pid_alive(int(pid), owner.get("proc_start")):
            return None
        return f"its {role} (pid {pid} on {host}) is gone"
    job = owner.get("slurm_job_id")
    if not job:
        return None  # another host, no Slurm: nothing can prove it dead
    if job == me.get("slurm_job_id"):
        return f"its {role} was an earlier run of this Slurm job {job} (requeued)"
    if states is _ASK:
        states = slurm_states([job])
    if states is None:
        return None
    state = states.get(job)
    if state is None:
        return f"its {role}'s Slurm job {job} has ended"
    if state not in SLURM_LIVE:
        return f"its {role}'s Slurm job {job} is {state}"
    return None
