"""`snakemake sweep --profile profiles/slurm` on the local cluster (slow).

In a copy of the working tree: two worker jobs finish exactly n_trials between them (no
duplicate, no lost trial; sacct shows both jobs); a re-run of the finished study submits
nothing; raising n_trials adds only the missing trials, and a worker `scancel`led mid-trial
leaves that trial failed with its reason, a retry with the same values runs, and the study
still reaches n_trials. Also: squeue tells a live job's trial from a dead one's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from slurm_utils import (
    JOBNAME_ARGS,
    SUBMITTED,
    copy_tree,
    run_snakemake,
    sacct_field,
    sh,
    submitter_env,
    wait_job,
)

from arctax.lifecycle.owners import dead_reason, slurm_states
from arctax.search.storage import load_study

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

RUN = "sweep-slurm"
OVERLAY = f"""\
run: {RUN}
data:
  max_tasks: 12
sweep:
  models: [champion]
  n_trials: 4
  workers: 2
  pruner: none            # every trial runs all its epochs: a kill lands mid-trial
  max_epochs: 4
  limit_train_batches: 4
  limit_val_batches: 2
  space:
    models.champion.d_model: {{type: int, low: 32, high: 48, step: 16}}
    models.champion.d_ff: {{type: int, low: 64, high: 128, step: 64}}
    trial69.batch_size: {{type: categorical, choices: [8, 16]}}
"""
SWEEP_DIR = f"results/{RUN}/sweep/champion"


def cmd(*overlays: str, timeout: int = 600) -> list[str]:
    """`snakemake sweep` with the Slurm profile on the demo data, bounded by `timeout`."""
    return [
        *("timeout", "-k", "15", str(timeout)),
        *(sys.executable, "-m", "snakemake", "sweep", "--profile", "profiles/slurm"),
        *("--configfile", "config/demo.yaml", "sweep.yaml", *overlays),
        *("--slurm-init-seconds-before-status-checks", "2"),
        *JOBNAME_ARGS,
    ]


def jobs(log: str, rule: str = "sweep_worker") -> list[str]:
    return [j for j, r, _ in SUBMITTED.findall(log) if r == rule]


def snakemake(workdir: Path, *overlays: str) -> tuple[int, str]:
    return run_snakemake(cmd(*overlays), workdir)


def study(workdir: Path):
    return load_study(workdir / SWEEP_DIR, RUN, "champion")


@pytest.fixture(scope="module")
def workdir(slurm_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sweep")
    copy_tree(d)
    (d / "sweep.yaml").write_text(OVERLAY)
    return d


@pytest.fixture(scope="module")
def first_run(workdir: Path) -> str:
    rc, log = snakemake(workdir)
    assert rc == 0, log[-6000:]
    return log


def test_two_workers_finish_exactly_n_trials_between_them(first_run: str, workdir: Path) -> None:
    workers = jobs(first_run)
    assert len(workers) == 2 and len(jobs(first_run, "prepare_data")) == 1
    trials = study(workdir).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]  # exactly n_trials, none lost or extra
    assert all(t.state.name == "COMPLETE" for t in trials)
    owners = [t.user_attrs["owner"]["slurm_job_id"] for t in trials]
    assert set(owners) <= set(workers)  # each trial signed by one of the two jobs
    records = [
        pd.read_json(workdir / SWEEP_DIR / f"workers/{w}.json", typ="series") for w in (0, 1)
    ]
    ran = sorted(t["number"] for r in records for t in r["trials"])
    assert ran == [0, 1, 2, 3]  # between them, each trial once
    for job in workers:  # sacct: both jobs complete, with the profile's resources
        assert sacct_field(job, "State") == "COMPLETED"
        tres = sacct_field(job, "AllocTRES").split(",")
        assert {"gres/gpu=1", "cpu=4", "mem=8000M"} <= set(tres), tres
        assert sacct_field(job, "Timelimit") == "06:00:00"  # runtime: "360 * attempt"
        assert sacct_field(job, "Account") == "arctax"
    df = pd.read_csv(workdir / SWEEP_DIR / "trials.csv")
    assert list(df["number"]) == [0, 1, 2, 3] and set(df["slurm_job_id"].astype(str)) <= set(
        workers
    )
    for name in ("best.yaml", "history.png", "importances.png", "parallel.png"):
        assert (workdir / SWEEP_DIR / name).stat().st_size > 0, name


def test_rerun_of_a_finished_study_submits_nothing(first_run: str, workdir: Path) -> None:
    rc, log = snakemake(workdir)
    assert rc == 0, log[-4000:]
    assert SUBMITTED.findall(log) == [] and "Nothing to be done" in log
    assert len(study(workdir).get_trials()) == 4


def test_more_trials_with_a_worker_cancelled_mid_trial(
    first_run: str, workdir: Path, tmp_path: Path
) -> None:
    (workdir / "more.yaml").write_text("sweep:\n  n_trials: 6\n")
    out = tmp_path / "snakemake.log"
    with out.open("w") as f:  # the params changed: both workers run again and add trials
        proc = subprocess.Popen(
            cmd("more.yaml"), cwd=workdir, stdout=f, stderr=subprocess.STDOUT, env=submitter_env()
        )
    try:
        victim, job = None, None
        deadline = time.monotonic() + 400
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            for t in study(workdir).get_trials():
                owner = t.user_attrs.get("owner") or {}
                # a new trial, in training (one epoch reported, three to go), run by a Slurm job
                if t.number >= 4 and t.state.name == "RUNNING" and t.intermediate_values:
                    victim, job = t.number, owner.get("slurm_job_id")
                    break
            time.sleep(0.2)
        assert victim is not None and job, f"no trial in training seen:\n{out.read_text()[-4000:]}"
        sh(f"scancel {job}")
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = out.read_text()
    assert rc == 0, log[-6000:]
    assert sacct_field(job, "State").startswith("CANCELLED")
    assert job in jobs(log) and len(jobs(log)) == 3  # two workers, and the cancelled one's retry
    trials = {t.number: t for t in study(workdir).get_trials()}
    killed = trials[victim]
    assert killed.state.name == "FAIL" and killed.user_attrs["fail_reason"]
    retries = [t for t in trials.values() if t.user_attrs.get("retry_of") == victim]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state.name == "COMPLETE"
    finished = [t for t in trials.values() if t.state.name == "COMPLETE"]
    assert len(finished) == 6 and len(trials) == 7  # the killed trial cost one trial, no more
    assert {t.number for t in finished} >= {0, 1, 2, 3}  # the first four untouched


def test_squeue_tells_a_live_owner_from_a_dead_one(slurm_cluster: None, tmp_path: Path) -> None:
    live = sh(f"sbatch --parsable -A arctax -o {tmp_path}/%j.out --wrap 'sleep 60'").strip()
    dead = sh(f"sbatch --parsable -A arctax -o {tmp_path}/%j.out --wrap 'sleep 60'").strip()
    try:
        deadline = time.monotonic() + 60
        while sacct_field(live, "State") != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.5)
        sh(f"scancel {dead}")
        wait_job(dead)
        states = slurm_states([live, dead])
        assert states[live] == "RUNNING" and states[dead] == "CANCELLED"
        assert slurm_states(["999999999"]) == {}  # unknown to Slurm: long gone
        # as a worker on another node sees the trials of these two jobs
        me = {"host": "another-node", "pid": 1, "slurm_job_id": None}
        owner = {"host": "vm-x", "pid": 123}
        assert dead_reason({**owner, "slurm_job_id": live}, me, states, "worker") is None
        reason = dead_reason({**owner, "slurm_job_id": dead}, me, states, "worker")
        assert reason == f"its worker's Slurm job {dead} is CANCELLED"
    finally:
        sh(f"scancel {live} {dead}")
