"""The local Slurm cluster: lifecycle, fake GPUs, accounting (sacct) and DDP-shaped 2-GPU jobs."""

from __future__ import annotations

import os
import shlex
import signal
import time
from pathlib import Path

import pytest
from slurm_utils import local_slurm, sacct_field, sh, wait_job

pytestmark = pytest.mark.slurm


def test_cluster_up_and_status(slurm_cluster: None) -> None:
    res = local_slurm("status")
    assert res.returncode == 0, res.stdout + res.stderr
    for daemon in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"):
        assert f"{daemon}: running" in res.stdout
    # Other tests' jobs may be running: any healthy state, never drained/down.
    assert sh("sinfo -h -N -p gpu -o %T").split()[0] in {"idle", "mixed", "allocated"}
    assert sh("sinfo -h -N -p gpu -o %G").strip() == "gpu:2"
    # At least 8 CPUs declared (oversubscribed on small machines) unless the user chose a count.
    if "LOCAL_SLURM_CPUS" not in os.environ:
        assert int(sh("sinfo -h -N -p gpu -o %c")) >= 8


def test_up_is_idempotent(slurm_cluster: None) -> None:
    res = local_slurm("up")
    assert res.returncode == 0, res.stderr
    assert "already running" in res.stdout


def test_one_gpu_job_is_accounted(slurm_cluster: None, tmp_path: Path) -> None:
    job = sh(
        f"sbatch --parsable --gpus=1 -o {tmp_path}/out.txt --wrap 'echo CVD=$CUDA_VISIBLE_DEVICES'"
    ).strip()
    assert wait_job(job) == "COMPLETED"
    assert (tmp_path / "out.txt").read_text().strip() == "CVD=0"
    assert "gres/gpu=1" in sacct_field(job, "AllocTRES").split(",")


def test_two_gpu_job_one_task_per_gpu(slurm_cluster: None, tmp_path: Path) -> None:
    # The shape Lightning DDP needs under srun: one task per GPU, both GPUs visible to each task.
    inner = shlex.quote('echo "$SLURM_PROCID $SLURM_NTASKS $CUDA_VISIBLE_DEVICES"')
    wrap = shlex.quote(f"srun bash -c {inner}")
    job = sh(
        f"sbatch --parsable --gpus=2 --ntasks-per-node=2 -o {tmp_path}/out.txt --wrap {wrap}"
    ).strip()
    assert wait_job(job) == "COMPLETED"
    lines = sorted((tmp_path / "out.txt").read_text().split("\n"))
    assert [ln for ln in lines if ln] == ["0 2 0,1", "1 2 0,1"]
    assert "gres/gpu=2" in sacct_field(job, "AllocTRES").split(",")


def test_down_and_status_exit_codes(slurm_cluster: None) -> None:
    # Runs last in this module (pytest keeps file order): stop, check, restart for later tests.
    assert local_slurm("down", timeout=120).returncode == 0
    assert local_slurm("down", timeout=120).returncode == 0  # already down: still fine
    res = local_slurm("status")
    assert res.returncode == 3, res.stdout
    assert "slurmctld: stopped" in res.stdout
    # No config naming a dead controller is left behind (Slurm clients would wait ~9 s on it).
    assert not Path("/etc/slurm/slurm.conf").is_symlink()
    res = local_slurm("up", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert local_slurm("status").returncode == 0


def test_up_recovers_from_half_started_cluster(slurm_cluster: None) -> None:
    # slurmd gone and its pid file stale (a crash, a reboot of /proc): `up` must notice and
    # restart what is missing instead of saying "already running".
    pid_file = Path(os.environ.get("LOCAL_SLURM_DIR", "/tmp/arctax-slurm")) / "run" / "slurmd.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    stale = next(p for p in range(4_000_000, 3_000_000, -1) if not Path(f"/proc/{p}").exists())
    pid_file.write_text(f"{stale}\n")
    assert local_slurm("status").returncode == 3
    res = local_slurm("up", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "already running" not in res.stdout
    assert local_slurm("status").returncode == 0
    assert sh("sinfo -h -N -p cpu -o %T").split()[0] == "idle"
