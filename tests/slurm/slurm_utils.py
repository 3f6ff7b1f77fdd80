"""Helpers for the Slurm tests: run scripts/local-slurm, run bounded commands, wait on jobs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "local-slurm"
UP_TIMEOUT_S = 300  # includes a possible apt install on a bare CI runner
CANNOT_RUN = 77


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
    """The submitter's environment: our accounting account, the default partition."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ARCTAX_")}
    return {**e, "ARCTAX_SLURM_ACCOUNT": "arctax"}


def run_snakemake(cmd: list[str], workdir: Path) -> tuple[int, str]:
    """Runs a `timeout`-bounded snakemake command in `workdir`; fails the test on a timeout."""
    res = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, env=submitter_env(), check=False
    )
    log = res.stdout + res.stderr
    assert res.returncode not in (124, 137), f"snakemake timed out:\n{log[-4000:]}"
    return res.returncode, log
