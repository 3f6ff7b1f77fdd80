"""A stopped test run never poisons the next one (slow).

`make test` takes ~20 minutes, so people stop it: Ctrl-C, a closed terminal, `timeout`. Before
the session cleanup, a run stopped during the workflow e2e tests left that workflow's
snakemake and its Slurm jobs running, and the next session failed 5 tests (a node still
`completing`, jobs missing from sacct). Here a child pytest session runs the e2e test and is
stopped once its jobs are queued, as `timeout -s TERM` stops it (SIGTERM to its process
group: it cleans up itself) and as a SIGKILL would (no cleanup at all: the next session must
do it); then a fresh session of the cluster tests must pass.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_utils import (
    OWNER_VAR,
    REPO,
    local_slurm,
    session_tag,
    sh,
    suite_jobs,
    suite_processes,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

E2E = "tests/slurm/test_workflow_e2e.py::test_every_rule_ran_as_a_slurm_job"
CLUSTER_TESTS = [
    "tests/slurm/test_local_slurm.py::test_cluster_up_and_status",
    "tests/slurm/test_local_slurm.py::test_one_gpu_job_is_accounted",
    "tests/slurm/test_local_slurm.py::test_two_gpu_job_one_task_per_gpu",
]


def child_session(log: Path, *tests: str) -> subprocess.Popen:
    """A pytest session of its own (process group too), run by this one (which holds the
    cluster lock: the child knows, from the environment this session set when it took it)."""
    env = {**os.environ, OWNER_VAR: session_tag()}
    with log.open("w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
            cwd=REPO,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_once_jobs_are_queued(proc: subprocess.Popen, log: Path, sig: int) -> str:
    """Wait until the child's workflow has a Slurm job, then signal the child's group."""
    deadline = time.monotonic() + 240
    while not suite_jobs():
        assert proc.poll() is None, f"the e2e session ended first:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no job submitted:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    tag = session_tag(proc.pid)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=300)
    return tag


def node_state() -> str:
    return sh("sinfo -h -N -o %T").split()[0]


def test_sigterm_stopped_session_cleans_up_after_itself(slurm_cluster: None, tmp_path: Path):
    log = tmp_path / "e2e.log"
    child = child_session(log, E2E)
    tag = stop_once_jobs_are_queued(child, log, signal.SIGTERM)
    text = log.read_text()
    assert child.returncode != 0, text[-3000:]
    assert "slurm tests (interrupted by SIGTERM): stopped" in text, text[-3000:]  # its cleanup
    assert not suite_jobs(), "its Slurm jobs outlived it"
    assert not [p for p, owner in suite_processes() if owner == tag], "its snakemake outlived it"
    assert node_state() == "idle"


def test_killed_session_is_cleaned_up_by_the_next_one(slurm_cluster: None, tmp_path: Path):
    log = tmp_path / "e2e.log"
    child = child_session(log, E2E)
    dead = stop_once_jobs_are_queued(child, log, signal.SIGKILL)  # no handler, no atexit
    # What such a session leaves depends on when it died (its snakemake may still cancel its
    # own jobs as it falls over its closed pipe), so leave one of each for certain: a job
    # running, and a process of the dead session.
    job = sh(f"sbatch --parsable -A arctax -o {tmp_path}/%j.out --wrap 'sleep 600'").strip()
    orphan = subprocess.Popen(["sleep", "600"], env={**os.environ, OWNER_VAR: dead})
    status = local_slurm("status").stdout
    assert "leftover test jobs (" in status and job in status, status

    log2 = tmp_path / "next.log"
    nxt = child_session(log2, *CLUSTER_TESTS)
    assert nxt.wait(timeout=600) == 0, log2.read_text()[-4000:]
    text = log2.read_text()
    assert "slurm tests (before the session): " in text, text[-3000:]
    assert f"stopped 1 test process(es) {orphan.pid}" in text or str(orphan.pid) in text
    assert "cancelled test jobs" in text and job in text
    assert orphan.wait(timeout=10) is not None
    assert not suite_jobs() and node_state() == "idle"
    assert "leftover test jobs: none" in local_slurm("status").stdout
