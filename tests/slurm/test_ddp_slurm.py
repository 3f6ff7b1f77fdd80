"""DDP training on the local Slurm cluster, in both launch shapes (slow).

- `srun`, one Slurm task per process (`--ntasks-per-node=2 --gpus=2`): Lightning's
  SLURMEnvironment; each task is one rank.
- The workflow's `train` job with `gpu: 2` (one task holding both fake GPUs): Snakemake runs
  workflow/scripts/train.py as a temp script, and Lightning's launcher re-runs that script for
  rank 1. The job is `scancel`led after its first epoch, retried by Snakemake (the profile's
  retries), and the retry resumes both ranks from the saved state.
The fake GPUs have no CUDA behind them: 2 CPU processes under gloo, as the training says.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from slurm_utils import JOBNAME_ARGS, REPO, sacct_field, sh, submitter_env, wait_job

from tests.conftest import tiny_overrides

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

RANK_LINE = re.compile(r"rank (\d)/2 pid (\d+) ")
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")
TRAIN = "results/ddp/train/encoder_decoder/seed307/best.ckpt"


def test_srun_one_task_per_rank(slurm_cluster: None, tiny_data: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "ddp.yaml"
    overlay.write_text(yaml.safe_dump(tiny_overrides(devices=2, max_epochs=2)))
    out, state = tmp_path / "out", tmp_path / "state"
    train = (
        f"srun --label {sys.executable} -m arctax.cli --config {REPO}/config/config.yaml "
        f"--config {overlay} train --model encoder_decoder --data {tiny_data} "
        f"--out {out} --state {state}"
    )
    (tmp_path / "job.sh").write_text(f"#!/bin/bash\n{train}\n")
    job = sh(
        "sbatch --parsable --account arctax --nodes=1 --ntasks-per-node=2 --gpus=2 "
        f"--cpus-per-task=1 --time=10 -o {tmp_path}/slurm.out {tmp_path}/job.sh"
    ).strip()
    assert wait_job(job, timeout=300) == "COMPLETED", (tmp_path / "slurm.out").read_text()[-4000:]
    log = (tmp_path / "slurm.out").read_text()
    ranks = {int(r): int(pid) for r, pid in RANK_LINE.findall(log)}
    assert set(ranks) == {0, 1} and ranks[0] != ranks[1], log[-4000:]
    assert re.search(r"^0: rank 0/2", log, re.M) and re.search(r"^1: rank 1/2", log, re.M)
    assert "gres/gpu=2" in sacct_field(job, "AllocTRES").split(",")
    steps = sh(f"sacct -j {job} -n -P -o JobID,NTasks").split()
    assert f"{job}.0|2" in steps, steps  # the training step: two tasks
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["cluster_environment"] == "SLURMEnvironment" and prov["devices_used"] == 2
    assert prov["epochs_run"] == 2 and prov["slurm_job_id"] == job


def ddp_profile(workdir: Path) -> None:
    """profiles/slurm with `gpu: 2` for train, as a user would set it in their profile.

    Not `--set-resources train:gpu=2`: on the command line it replaces the profile's whole
    `train` entry (runtime, mem_mb, slurm_extra fall back to the defaults; measured).
    """
    text = (REPO / "profiles/slurm/config.yaml").read_text()
    block = re.compile(r"(\n  train:\n    gpu: )1(\n(?:    .*\n)*?    cpus_per_gpu: )\d+")
    text, n = block.subn(r"\g<1>2\g<2>1", text)  # 1 CPU per GPU: the local node has 8
    assert n == 1, "profiles/slurm changed: update this test's edit of its train entry"
    (workdir / "profiles" / "ddp").mkdir(parents=True)
    (workdir / "profiles" / "ddp" / "config.yaml").write_text(text)


def test_workflow_gpu2_job_cancelled_retried_resumes(slurm_cluster: None, tmp_path: Path) -> None:
    w = tmp_path / "wf"
    w.mkdir()
    for name in ("Snakefile", "workflow", "config"):  # the workflow, read only
        (w / name).symlink_to(REPO / name)
    ddp_profile(w)
    (w / "profiles" / "local").symlink_to(REPO / "profiles" / "local")
    (w / "ddp.yaml").write_text(
        "run: ddp\ndata:\n  max_tasks: 12\n"
        "trainer:\n  max_epochs: 6\n  devices: 2\n  accelerator: auto\n"
    )
    configs = ("--configfile", "config/demo.yaml", "ddp.yaml")  # after the target

    def snakemake(target: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "snakemake", target, *extra, *configs]

    # data and smoke test on this machine: only the training goes through Slurm
    smoke = snakemake("results/ddp/smoke/encoder_decoder.json", "--profile", "profiles/local")
    sh(" ".join(smoke) + " --cores 2", timeout=300, cwd=w)
    env = submitter_env()
    state = w / "results/ddp/.state/train/encoder_decoder/seed307"
    log = tmp_path / "snakemake.log"
    cmd = [
        *("timeout", "-k", "15", "420"),
        *snakemake(
            TRAIN,
            "--profile",
            "profiles/ddp",
            "--slurm-init-seconds-before-status-checks",
            "2",
            *JOBNAME_ARGS,
        ),
    ]
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=w, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        deadline, job = time.monotonic() + 300, None
        while time.monotonic() < deadline and proc.poll() is None:
            jobs = SUBMITTED.findall(log.read_text())
            if jobs and (state / "last.ckpt").exists():  # one epoch done by both ranks
                job = jobs[0]
                break
            time.sleep(0.2)
        assert job is not None, f"no epoch finished in time:\n{log.read_text()[-4000:]}"
        sh(f"scancel {job}")
        rc = proc.wait(timeout=420)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert rc == 0, text[-6000:]
    jobs = SUBMITTED.findall(text)
    assert len(jobs) == 2 and jobs[0] == job, jobs
    assert sacct_field(jobs[0], "State").startswith("CANCELLED")
    assert sacct_field(jobs[1], "State") == "COMPLETED"
    for j in jobs:  # both attempts got both (fake) GPUs, in one task
        assert "gres/gpu=2" in sacct_field(j, "AllocTRES").split(","), j
    assert sacct_field(jobs[1], "Timelimit") == "12:00:00"  # the profile's retry escalation
    # every rank's attempts, each in its own log: stopped together, resumed together
    for rank, name in ((0, "seed307.attempts.log"), (1, "seed307.attempts.rank1.log")):
        attempts = state.with_name(name).read_text().split("=== attempt started")[1:]
        assert len(attempts) == 2, (rank, attempts)
        assert f"rank {rank}/2 pid" in attempts[0] and "training stopped" in attempts[0]
        assert "resuming encoder_decoder seed 307" in attempts[1]
        assert f"Slurm job {jobs[1]}" in attempts[1]
    prov = json.loads((w / TRAIN).with_name("provenance.json").read_text())
    assert prov["devices_used"] == 2 and prov["cluster_environment"] == "LightningEnvironment"
    assert prov["resumed_from"] and prov["slurm_job_id"] == jobs[1]
    assert "2 CPU processes" in prov["devices_note"]
