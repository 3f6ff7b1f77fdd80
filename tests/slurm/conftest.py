"""A session-scoped local Slurm cluster (scripts/local-slurm) for the tests in this folder."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from slurm_utils import CANNOT_RUN, SCRIPT, UP_TIMEOUT_S, local_slurm, skip_or_fail


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """Brings the cluster up for the session; stops it only if this session started it."""
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing")
    was_up = local_slurm("status").returncode == 0
    if not was_up:
        try:
            res = local_slurm("up", timeout=UP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            skip_or_fail(f"scripts/local-slurm up took more than {UP_TIMEOUT_S} s")
        if res.returncode == CANNOT_RUN:
            skip_or_fail(res.stderr.strip() or "local-slurm cannot run here (exit 77)")
        assert res.returncode == 0, f"local-slurm up failed:\n{res.stdout}\n{res.stderr}"
    yield
    if not was_up:
        local_slurm("down", timeout=120)
