"""The whole workflow through `--profile profiles/slurm` on the local cluster (slow).

Runs in a copy of the working tree (tracked + untracked-not-ignored files), so the checkout's
results/ and .snakemake/ are never touched. A tiny overlay on config/demo.yaml keeps it short.
Checks: every non-local rule ran as a Slurm job, GPU rules got `gres/gpu=1`, outputs and the
report exist; a forced re-run of one model submits only that model's jobs and the comparison;
a job failing mid-DAG is reported with its rule and log, and a restart redoes only it; a
training job cancelled mid-run is retried and resumes from its saved state.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from slurm_utils import (
    JOBNAME_ARGS,
    SUBMITTED,
    copy_tree,
    run_snakemake,
    sacct_field,
    sh,
    submitter_env,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

RUN = "e2e"
OVERLAY = f"""\
run: {RUN}
data:
  max_tasks: 12
trainer:
  max_epochs: 2
eval:
  bootstrap_samples: 200
adapt:              # the fan-out: the champion and the reference, 4 tasks in 2 shards each
  models: [champion]
  max_tasks: 4
  tasks_per_job: 2
  steps: 4
  augment_views: 2
  voting_views: 2
"""
GPU_RULES = {"smoke_test", "train", "bootstrap_champion", "evaluate", "evaluate_reference", "adapt"}
SLURM_RULES = GPU_RULES | {"prepare_data", "prepare_test", "compare", "compare_adapt"}
TEST_SET = "arcagi1_eval"  # the demo's one test set (data.test_source null: ARC-AGI-1 evaluation)
LOCAL_RULES = {"all", "smoke_report", "adapt_gather"}
MODELS = ("champion", "encoder_decoder", "decoder_only")
DECODER_CKPT = f"results/{RUN}/train/decoder_only/seed307/best.ckpt"


@dataclass
class Run:
    """One snakemake invocation: its exit code, output, and the Slurm jobs it submitted."""

    returncode: int
    log: str
    jobs: list[tuple[str, str, str]]  # (slurm job id, rule, log path below rule_<rule>/)


def snakemake_cmd(
    *extra: str, timeout: int, target: str = "all", overlays: tuple[str, ...] = ()
) -> list[str]:
    """`snakemake <target>` with the Slurm profile and the e2e overlay, bounded by `timeout`."""
    return [
        *("timeout", "-k", "15", str(timeout)),
        *(sys.executable, "-m", "snakemake", target, "--profile", "profiles/slurm"),
        *("--configfile", "config/demo.yaml", "e2e.yaml", *overlays),
        # Poll sacct every few seconds, not the profile's 20 s and up (real-cluster manners).
        *("--slurm-init-seconds-before-status-checks", "2"),
        *JOBNAME_ARGS,
        *extra,
    ]


def parse(returncode: int, log: str) -> Run:
    """Collects the Slurm submissions from snakemake's output."""
    return Run(returncode, log, SUBMITTED.findall(log))


def snakemake(workdir: Path, *extra: str, timeout: int = 900) -> Run:
    """Runs snakemake in `workdir`, failing the test on a timeout."""
    return parse(*run_snakemake(snakemake_cmd(*extra, timeout=timeout), workdir))


@pytest.fixture(scope="module")
def workdir(slurm_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository with the e2e overlay."""
    d = tmp_path_factory.mktemp("e2e")
    copy_tree(d)
    (d / "e2e.yaml").write_text(OVERLAY)
    return d


@pytest.fixture(scope="module")
def first_run(workdir: Path) -> Run:
    """The full workflow, from nothing."""
    run = snakemake(workdir)
    assert run.returncode == 0, run.log[-6000:]
    return run


def test_every_rule_ran_as_a_slurm_job(first_run: Run) -> None:
    remote = set(re.findall(r"^(?:rule|checkpoint) (\w+):", first_run.log, re.M))
    local = set(re.findall(r"^localrule (\w+):", first_run.log, re.M))
    assert remote == SLURM_RULES
    assert local <= LOCAL_RULES
    rules = [rule for _, rule, _ in first_run.jobs]
    expected = {r: 1 for r in SLURM_RULES} | {"smoke_test": 3, "train": 3, "evaluate": 3}
    expected["adapt"] = 4  # (champion, reference) x 2 shards
    assert {r: rules.count(r) for r in set(rules)} == expected
    for job, rule, _ in first_run.jobs:
        assert sacct_field(job, "State") == "COMPLETED", (job, rule)
        tres = sacct_field(job, "AllocTRES").split(",")
        assert ("gres/gpu=1" in tres) == (rule in GPU_RULES), (job, rule, tres)
        if rule == "train":  # cpus_per_gpu: 4 reaches Slurm (a default cpus_per_task would not)
            assert "cpu=4" in tres, (job, tres)
        assert sacct_field(job, "Account") == "arctax"


def test_each_adaptation_shard_is_one_slurm_job_of_its_tasks(first_run: Run, workdir: Path) -> None:
    out = workdir / "results" / RUN
    jobs = sorted(job for job, rule, _ in first_run.jobs if rule == "adapt")
    shards = {}
    for run in ("champion/seed307", "champion_bootstrap/reference"):
        for i in (0, 1):
            shard = json.loads((out / f"adapt/{run}/shards/{i}-of-2.json").read_text())
            assert len(shard["tasks"]) == 2 and not shard["resumed"]  # 2 tasks, one job
            shards[shard["slurm_job_id"]] = (run, i)
    assert sorted(shards) == jobs  # every shard ran as its own Slurm job, and nothing else did
    for job in jobs:
        assert sacct_field(job, "State") == "COMPLETED"
        assert "gres/gpu=1" in sacct_field(job, "AllocTRES").split(",")
    md = (out / "compare" / "adaptation.md").read_text()
    assert "| champion+adapt |" in md and "| champion_bootstrap+vote |" in md


def test_outputs_and_report(first_run: Run, workdir: Path) -> None:
    out = workdir / "results" / RUN
    for f in ("summary.md", "summary.csv", "audit.csv", "accuracy.png", "gallery.png"):
        assert (out / "compare" / TEST_SET / f).stat().st_size > 0, f
    assert (out / "smoke" / "report.json").stat().st_size > 0
    for model in MODELS:
        assert (out / "train" / model / "seed307" / "best.ckpt").exists()
    sh(
        f"{sys.executable} -m snakemake --configfile config/demo.yaml e2e.yaml "
        "--report report.html",
        timeout=300,
        cwd=workdir,
    )
    assert (workdir / "report.html").stat().st_size > 10_000


def test_forced_rerun_submits_only_that_model(first_run: Run, workdir: Path) -> None:
    run = snakemake(workdir, "--forcerun", DECODER_CKPT)
    assert run.returncode == 0, run.log[-6000:]
    submitted = sorted((rule, "decoder_only" in path) for _, rule, path in run.jobs)
    assert submitted == [("compare", False), ("evaluate", True), ("train", True)]


def test_failure_mid_dag_is_reported_and_a_restart_redoes_only_it(
    first_run: Run, workdir: Path
) -> None:
    # The state of a first run in which decoder_only fails: its results and the comparison do
    # not exist yet. Then a real failure, no mock: a 1-minute Slurm limit for training. The job
    # reads its end time from squeue, is already inside its 300 s save margin, stops after one
    # batch and exits 75; with no retries the rule fails.
    for part in ("train/decoder_only", f"eval/{TEST_SET}/decoder_only"):
        shutil.rmtree(workdir / "results" / RUN / part)
    for f in (workdir / "results" / RUN / "compare" / TEST_SET).iterdir():  # the comparison only:
        f.unlink()  # the adaptation one (compare/adaptation.md) does not involve decoder_only
    failed = snakemake(workdir, "--set-resources", "train:runtime=1", "--retries", "0")
    assert failed.returncode != 0
    assert [(rule, "decoder_only" in path) for _, rule, path in failed.jobs] == [("train", True)]
    job = failed.jobs[0][0]
    assert sacct_field(job, "State") == "FAILED" and sacct_field(job, "Timelimit") == "00:01:00"
    # the failing rule and where to look, in Snakemake's own report
    assert "Error in rule train:" in failed.log
    assert "logs/train/decoder_only/seed307.log" in failed.log
    assert "within 300s of the Slurm time limit" in failed.log  # show-failed-logs: the cause
    assert not (workdir / DECODER_CKPT).exists()  # nothing half-claimed as finished
    # The restart (the profile sets rerun-incomplete) redoes only the failed model's jobs.
    again = snakemake(workdir)
    assert again.returncode == 0, again.log[-6000:]
    submitted = sorted((rule, "decoder_only" in path) for _, rule, path in again.jobs)
    assert submitted == [("compare", False), ("evaluate", True), ("train", True)]
    assert (workdir / DECODER_CKPT).exists()


def test_cancelled_training_is_retried_and_resumes(
    first_run: Run, workdir: Path, tmp_path: Path
) -> None:
    # Longer training for this one run (other models untouched: params changes do not trigger),
    # with DataLoader workers as in config/config.yaml: scancel signals them too.
    (workdir / "e2e_long.yaml").write_text("trainer:\n  max_epochs: 30\n  num_workers: 2\n")
    state = workdir / "results" / RUN / ".state" / "train" / "decoder_only" / "seed307"
    out_file = tmp_path / "snakemake.log"
    # The profile's `slurm-status-command: squeue` is what lets snakemake see the cancel: with
    # plugin 2.8's default (sacct) the job reads "CANCELLED by <uid>" and it waits forever.
    extra = ["--rerun-triggers", "mtime", "--forcerun", DECODER_CKPT]
    cmd = snakemake_cmd(*extra, timeout=600, target=DECODER_CKPT, overlays=("e2e_long.yaml",))
    started = time.time()
    with out_file.open("w") as f:
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=f, stderr=subprocess.STDOUT, env=submitter_env()
        )
    try:
        # Cancel the job once it has finished an epoch of the new (30-epoch) run.
        deadline, job = time.monotonic() + 300, None
        while time.monotonic() < deadline and proc.poll() is None:
            jobs = parse(0, out_file.read_text()).jobs
            last = state / "last.ckpt"
            if jobs and last.exists() and last.stat().st_mtime > started:
                job = jobs[0][0]
                break
            time.sleep(0.2)
        assert job is not None, f"no epoch finished in time:\n{out_file.read_text()[-4000:]}"
        sh(f"scancel {job}")
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = parse(rc, out_file.read_text())
    assert run.returncode == 0, run.log[-6000:]
    assert [rule for _, rule, _ in run.jobs] == ["train", "train"]
    assert sacct_field(job, "State").startswith("CANCELLED")
    assert sacct_field(run.jobs[1][0], "State") == "COMPLETED"
    # The profile's `runtime: "360 * attempt"`: the retry asks for twice the time.
    assert [sacct_field(j, "Timelimit") for j, _, _ in run.jobs] == ["06:00:00", "12:00:00"]
    train_log = workdir / "results" / RUN / "logs" / "train" / "decoder_only" / "seed307.log"
    assert "resuming decoder_only seed 307 from" in train_log.read_text()
    # Every attempt's output survives in the attempts log: the forced run trained again from
    # scratch (epoch 0), the cancelled attempt saved its state, the retry went on from there.
    history = state.with_name("seed307.attempts.log").read_text()
    attempts = history.split("=== attempt started")[-2:]
    first_epochs = [int(m) for m in re.findall(r"^epoch +(\d+) ", attempts[0], re.M)]
    retry_epochs = [int(m) for m in re.findall(r"^epoch +(\d+) ", attempts[1], re.M)]
    assert first_epochs[0] == 0 and "training again from scratch" in attempts[0]
    assert "training stopped" in attempts[0], attempts[0][-3000:]
    assert "killed by signal" not in attempts[0], attempts[0][-3000:]
    # the retry starts right after the last saved epoch and runs on (to epoch 29, or until
    # early stopping), one epoch after another
    assert retry_epochs == list(range(first_epochs[-1] + 1, retry_epochs[-1] + 1)), retry_epochs
    prov = json.loads(
        (workdir / "results" / RUN / "train/decoder_only/seed307/provenance.json").read_text()
    )
    assert prov["epochs_run"] == retry_epochs[-1] + 1 and prov["resumed_from"]
    assert retry_epochs[-1] == 29 or prov["stopped_early"], prov["epochs_run"]
