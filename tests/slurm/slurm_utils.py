"""Helpers for the Slurm tests: run scripts/local-slurm, run bounded commands, wait on jobs."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "local-slurm"
UP_TIMEOUT_S = 300  # includes a possible apt install on a bare CI runner
CANNOT_RUN = 77
# Every Slurm job the tests submit is named `<TEST_PREFIX>_...` (snakemake: --slurm-jobname-prefix;
# sbatch: $SBATCH_JOB_NAME), so a session cancels its own and its predecessors' jobs, never a
# user's. scripts/local-slurm status lists them (same default prefix).
TEST_PREFIX = os.environ.get("LOCAL_SLURM_TEST_PREFIX", "arctaxtest")
JOBNAME_ARGS = ("--slurm-jobname-prefix", TEST_PREFIX)
# Every process the tests start (snakemake, its `timeout`) carries the session that started it:
# "<pytest pid>:<its start time>". One whose session is gone is a leftover, stopped at the next
# session's start; the session stops its own at its end or when it is interrupted.
OWNER_VAR = "ARCTAX_SLURM_TEST_OWNER"
# Set while a session holds the cluster's lock (conftest.py); a nested session or
# scripts/chaos.py run by a test finds it and does not wait for the lock its parent holds.
LOCKED_BY = "ARCTAX_SLURM_TESTS_LOCKED"


def skip_or_fail(reason: str) -> None:
    """Skip locally, but fail under CI=true: a cluster that silently never runs tests nothing."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Slurm tests cannot run under CI: {reason}")
    pytest.skip(reason)


def local_slurm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs scripts/local-slurm with `args`, capturing output; bounded by `timeout` seconds."""
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def sh(cmd: str, timeout: float = 60, cwd: Path | None = None) -> str:
    """Runs a shell command (bounded by `timeout`), asserting success; returns stdout."""
    res = subprocess.run(
        ["timeout", "-k", "15", str(timeout), "bash", "-c", cmd],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )
    assert res.returncode == 0, f"`{cmd}` failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


def sacct_field(job_id: str, field: str) -> str:
    """One sacct field of the job allocation (empty until slurmdbd has recorded the job)."""
    return sh(f"sacct -j {job_id} -X -n -P -o {field}").strip()


def wait_job(job_id: str, timeout: float = 60) -> str:
    """Polls sacct until the job reaches a final state; returns that state."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = sacct_field(job_id, "State")
        if state and state.split()[0] not in {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING"}:
            return state
        time.sleep(0.5)
    pytest.fail(f"job {job_id} still {state!r} after {timeout} s")


def copy_tree(dst: Path) -> None:
    """Copies the working tree without ignored files (results/, .snakemake/, .venv/) to `dst`."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file():
            (dst / src.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / src.relative_to(REPO))


# One Slurm job per line of snakemake's output: (job id, rule, log path below rule_<rule>/).
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/(\S*)\)")


def submitter_env() -> dict[str, str]:
    """The submitter's environment: our accounting account, the default partition, and this
    test session as the owner of every process started with it."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ARCTAX_")}
    return {**e, "ARCTAX_SLURM_ACCOUNT": "arctax", OWNER_VAR: session_tag()}


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): with the pid, names it uniquely."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def session_tag(pid: int | None = None) -> str:
    """``"<pid>:<start time>"`` of a test session (default: this process)."""
    pid = pid or os.getpid()
    return f"{pid}:{_start_time(pid)}"


def _alive(tag: str) -> bool:
    pid, _, started = tag.partition(":")
    return pid.isdigit() and _start_time(int(pid)) == started


def suite_processes() -> list[tuple[int, str]]:
    """(pid, owner) of every live process a test session started (not the jobs' own
    processes: those carry SLURM_JOB_ID and go with their job)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = dict(
                kv.split(b"=", 1) for kv in (d / "environ").read_bytes().split(b"\0") if b"=" in kv
            )
        except OSError:
            continue
        owner = env.get(OWNER_VAR.encode())
        if owner and b"SLURM_JOB_ID" not in env:
            found.append((int(d.name), owner.decode()))
    return found


def suite_jobs() -> list[str]:
    """Ids of the queued or running Slurm jobs of test sessions (by their name prefix)."""
    res = subprocess.run(
        ["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=30, check=False
    )
    return [
        line.split()[0]
        for line in res.stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].startswith(TEST_PREFIX)
    ]


def _wait(what: str, ok, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise RuntimeError(f"local Slurm: {what} after {timeout:.0f} s")
        time.sleep(0.5)


def _answers(cmd: list[str]) -> bool:
    return subprocess.run(cmd, capture_output=True, timeout=30, check=False).returncode == 0


def clean_slate(timeout: float = 180) -> list[str]:
    """Stop what test sessions left behind or this one started, and wait for a clean cluster.

    Processes started by this session or by a session that is gone (snakemake first gets
    SIGTERM, which cancels its own jobs, then SIGKILL); then every test job (by name prefix,
    never another user's); then until no test job is queued, the node is idle and accounting
    answers. Returns what it did, for the log.
    """
    done = []
    mine = session_tag()
    procs = [pid for pid, owner in suite_processes() if owner == mine or not _alive(owner)]
    if procs:
        done.append(f"stopped {len(procs)} test process(es) {' '.join(map(str, procs))}")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{p}").exists() for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        procs = [p for p in procs if Path(f"/proc/{p}").exists()]
    if procs:
        done.append(f"processes that would not die: {procs}")
    jobs = suite_jobs()
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=30, check=False)
        done.append(f"cancelled test jobs {' '.join(jobs)}")
    _wait("test jobs still queued", lambda: not suite_jobs(), timeout)
    _wait(
        "node not idle",
        lambda: (
            subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, check=False
            ).stdout.split()[:1]
            == ["idle"]
        ),
        timeout,
    )
    _wait("accounting (sacct) not answering", lambda: _answers(["sacct", "-n", "-X"]), timeout)
    return done


def run_snakemake(cmd: list[str], workdir: Path) -> tuple[int, str]:
    """Runs a `timeout`-bounded snakemake command in `workdir`; fails the test on a timeout."""
    res = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, env=submitter_env(), check=False
    )
    log = res.stdout + res.stderr
    assert res.returncode not in (124, 137), f"snakemake timed out:\n{log[-4000:]}"
    return res.returncode, log
