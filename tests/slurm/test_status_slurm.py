"""`arctax status` beside real Slurm jobs: a pending one is `queued` with Slurm's reason, a
running one is `running`, both with their job ids, read from `squeue` (local cluster)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from slurm_utils import TEST_PREFIX, sh

from arctax import status as st
from arctax.settings import load_settings
from tests.test_status import mark_incomplete, snakemake_running

pytestmark = pytest.mark.slurm


def test_status_reads_pending_and_running_jobs_from_squeue(slurm_cluster: None, tmp_path: Path):
    name = f"--job-name {TEST_PREFIX}_status"
    pending = sh(f"sbatch --parsable {name} --begin=now+1hour --wrap 'sleep 1'").strip()
    running = sh(f"sbatch --parsable {name} -o {tmp_path}/o.txt --wrap 'sleep 300'").strip()
    try:
        deadline = time.monotonic() + 120
        while sh(f"squeue -h -j {running} -o %T").strip() != "RUNNING":
            assert time.monotonic() < deadline, "the sleep job never started"
            time.sleep(1)
        cfg = load_settings(overrides={"run": "t", "seeds": [0]})
        run = tmp_path / "results" / "t"
        run.mkdir(parents=True)
        mark_incomplete(tmp_path, run / "train" / "champion" / "seed0" / "best.ckpt", pending)
        mark_incomplete(tmp_path, run / "train" / "decoder_only" / "seed0" / "best.ckpt", running)
        snakemake_running(tmp_path)
        study = st.study_status(cfg, run, tmp_path)
        rows = {r.job: r for r in study.rows}
        assert study.squeue
        queued = rows["train champion seed0"]
        assert (queued.state, queued.slurm) == (st.QUEUED, pending)
        assert queued.exit.startswith("PENDING (BeginTime")
        now = rows["train decoder_only seed0"]
        assert (now.state, now.slurm) == (st.RUNNING, running)
        assert "squeue" in st.format_status(study)
    finally:
        sh(f"scancel {pending} {running}")
