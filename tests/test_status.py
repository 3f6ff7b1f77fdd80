"""``arctax status`` on constructed result trees: the files the workflow writes, laid out as it
writes them (Snakemake's incomplete markers and locks, Slurm executor logs, attempts logs,
metrics.csv), and the states and estimates the table must show for them."""

from __future__ import annotations

import base64
import csv
import json
import os
import time
from pathlib import Path

import pytest

from arctax import status as st
from arctax.cli import main
from arctax.lifecycle import stop_line
from arctax.settings import load_settings

OVERRIDES = {"run": "t", "seeds": [0], "trainer": {"max_epochs": 100}}


@pytest.fixture
def cfg() -> dict:
    return load_settings(overrides=OVERRIDES)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """(working directory, results/t) of an empty study."""
    run = tmp_path / "results" / "t"
    run.mkdir(parents=True)
    return tmp_path, run


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def metrics(path: Path, val_losses: list[float], seconds: list[float]) -> None:
    rows = [
        {"epoch": i, "step": 10 * (i + 1), "train_loss": 1.0, "val_loss": v, "train_token_acc": 0,
         "val_token_acc": 0, "val_tf_grid_acc": 0, "lr": 1e-3, "seconds": s}
        for i, (v, s) in enumerate(zip(val_losses, seconds, strict=True))
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def header(job: str = "none") -> str:
    return f"=== attempt started 2026-01-01T00:00:00Z on node1, Slurm job {job} ===\n"


def mark_incomplete(workdir: Path, output: Path, jobid: str | None) -> None:
    """Snakemake's marker of a started job (persistence/file.py: urlsafe base64 of the path)."""
    key = os.path.relpath(output, workdir)
    name = base64.urlsafe_b64encode(key.encode()).decode()
    write(workdir / ".snakemake" / "incomplete" / name, json.dumps({"external_jobid": jobid}))


def snakemake_running(workdir: Path) -> None:
    write(workdir / ".snakemake" / "locks" / "0.output.lock", "results/t/x\n")


def rows(cfg, run, workdir, **kw) -> dict[str, st.Row]:
    study = st.study_status(cfg, run, workdir, use_squeue=False, **kw)
    return {r.job: r for r in study.rows}


def train_out(run: Path, model: str = "champion") -> Path:
    return run / "train" / model / "seed0"


def state(run: Path, model: str = "champion") -> Path:
    return run / ".state" / "train" / model / "seed0"


def test_empty_study_lists_every_job_not_started(cfg, tree):
    workdir, run = tree
    got = rows(cfg, run, workdir)
    assert {"prepare data", "smoke champion", "train champion seed0", "train decoder_only seed0",
            "evaluate arcagi1_eval encoder_decoder seed0", "compare arcagi1_eval"} <= set(got)  # fmt: skip
    assert {r.state for r in got.values()} == {st.NOT_STARTED}
    text = st.format_status(st.study_status(cfg, run, workdir, use_squeue=False))
    assert f"{len(got)} jobs: {len(got)} not started" in text


def test_running_training_epoch_3_of_100_with_estimate(cfg, tree):
    workdir, run = tree
    metrics(state(run) / "metrics.csv", [2.0, 1.5, 1.7], [10.0, 12.0, 14.0])
    write(state(run).with_name("seed0.attempts.log"), header("4242") + "epoch 0 ...\n")
    write(run / "logs" / "train" / "champion" / "seed0.log", header("4242"))
    mark_incomplete(workdir, train_out(run) / "best.ckpt", "4242")
    snakemake_running(workdir)
    r = rows(cfg, run, workdir)["train champion seed0"]
    assert r.state == st.RUNNING
    assert r.progress == "epoch 3/100"
    assert r.best == "1.5000 @1"  # the lowest val_loss and its epoch, not the last
    assert r.per_epoch == "12.0s"
    assert r.left_s == pytest.approx(97 * 12.0)
    assert (r.slurm, r.attempts) == ("4242", 1)
    text = st.format_status(st.study_status(cfg, run, workdir, use_squeue=False))
    assert "<= 19m24s" in text and "upper bound" in text and "early stopping" in text
    assert "3/300 epochs" in text  # three trainings of 100 epochs, 3 done


def test_marker_without_log_is_queued_and_marker_without_snakemake_is_stopped(cfg, tree):
    workdir, run = tree
    mark_incomplete(workdir, train_out(run) / "best.ckpt", "77")
    mark_incomplete(workdir, run / "eval" / "arcagi1_eval" / "champion" / "seed0" / "summary.json", "78")  # fmt: skip
    snakemake_running(workdir)
    got = rows(cfg, run, workdir)
    assert got["train champion seed0"].state == st.QUEUED  # submitted, not begun
    assert got["train champion seed0"].slurm == "77"
    # Snakemake gone (no lock): the started jobs did not end; a rerun continues them
    for lock in (workdir / ".snakemake" / "locks").iterdir():
        lock.unlink()
    got = rows(cfg, run, workdir)
    assert got["train champion seed0"].state == st.STOPPED
    assert got["evaluate arcagi1_eval champion seed0"].state == st.INTERRUPTED


def test_stopped_will_resume_after_exit_75(cfg, tree):
    workdir, run = tree
    metrics(state(run) / "metrics.csv", [2.0, 1.8], [5.0, 5.0])
    stop = (
        "training stopped (received SIGUSR1); resumable state in x/last.ckpt (epoch 2); "
        "run again to resume\n"
    )
    write(state(run).with_name("seed0.attempts.log"),
          header("11") + "Traceback (most recent call last):\nValueError: old\n"
          + header("12") + "epoch 0\n" + stop)  # fmt: skip
    r = rows(cfg, run, workdir)["train champion seed0"]
    assert r.state == st.STOPPED
    assert r.exit == "exit 75: received SIGUSR1"
    assert (r.attempts, r.slurm) == (2, "12")  # the last attempt's job
    assert r.progress == "epoch 2/100"


def test_failed_jobs_name_their_reason(cfg, tree):
    workdir, run = tree
    write(run / "logs" / "eval" / "arcagi1_eval" / "champion" / "seed0.log",
          "loading\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
          "arctax.evaluation.checkpoints.CheckpointError: best.ckpt: not an arctax checkpoint\n")  # fmt: skip
    write(workdir / "logs" / "slurm" / "rule_evaluate" / "arcagi1_eval_champion_0" / "55.log")
    # a training killed by Slurm at its time limit: two submissions, the last one's message
    slurm = workdir / "logs" / "slurm" / "rule_train" / "decoder_only_0"
    write(slurm / "100.log", "started\n")
    time.sleep(0.01)
    write(slurm / "101.log", "slurmstepd: error: *** JOB 101 ON n1 CANCELLED AT 2026-01-01T06:00:00 DUE TO TIME LIMIT ***\n")  # fmt: skip
    write(run / "logs" / "train" / "decoder_only" / "seed0.log", "epoch 0\n")
    got = rows(cfg, run, workdir)
    ev = got["evaluate arcagi1_eval champion seed0"]
    assert ev.state == st.FAILED
    assert (ev.attempts, ev.slurm) == (1, "55")  # wildcards in Snakemake's order: test set first
    assert ev.exit.endswith("best.ckpt: not an arctax checkpoint")
    tr = got["train decoder_only seed0"]
    assert tr.state == st.FAILED and "DUE TO TIME LIMIT" in tr.exit
    assert (tr.attempts, tr.slurm) == (2, "101")


def test_quiet_training_without_record_is_stalled(cfg, tree):
    workdir, run = tree
    metrics(state(run) / "metrics.csv", [2.0], [30.0])
    write(state(run).with_name("seed0.attempts.log"), header())
    assert rows(cfg, run, workdir)["train champion seed0"].state == st.RUNNING  # just written
    later = time.time() + 3600
    r = rows(cfg, run, workdir, now=later)["train champion seed0"]
    assert r.state == st.STALLED and "no output for" in r.exit


def test_finished_study_all_done(cfg, tree):
    workdir, run = tree
    study = st.study_status(cfg, run, workdir, use_squeue=False)
    for job in st.study_jobs(cfg, run):
        for out in job.outputs:
            write(out)
        if job.rule == "train":
            metrics(job.outputs[2], [2.0, 1.0, 1.5], [4.0, 4.0, 4.0])
    study = st.study_status(cfg, run, workdir, use_squeue=False)
    assert {r.state for r in study.rows} == {st.DONE}
    train = next(r for r in study.rows if r.job == "train champion seed0")
    assert train.progress == "epoch 3/100 (early stop)" and train.best == "1.0000 @1"
    assert train.left_s is None
    text = st.format_status(study)
    assert f"{len(study.rows)} jobs: {len(study.rows)} done" in text
    assert "trainings: 3/3 done, 9/9 epochs" in text


def test_jobs_on_disk_the_config_does_not_name_are_listed(cfg, tree):
    workdir, run = tree
    write(run / "logs" / "train" / "champion" / "seed5.log", header())
    write(run / "logs" / "generate_rearc" / "0-of-2.log", "ok\n")
    write(run / "rearc" / "shards" / "0-of-2.json", "{}")
    got = rows(cfg, run, workdir)
    assert "train champion seed5" in got
    assert got["re-arc shard 0-of-2"].state == st.DONE


def test_status_changes_nothing(cfg, tree):
    workdir, run = tree
    metrics(state(run) / "metrics.csv", [2.0], [1.0])
    mark_incomplete(workdir, train_out(run) / "best.ckpt", "1")
    snakemake_running(workdir)

    def snapshot() -> dict[str, tuple[float, int]]:
        return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in workdir.rglob("*")}

    before = snapshot()
    st.format_status(st.study_status(cfg, run, workdir))  # squeue too, where it exists
    assert snapshot() == before


def test_cli_status_prints_the_table(tree, capsys, monkeypatch):
    workdir, _run = tree
    monkeypatch.chdir(workdir)
    args = ["--set", "run=t", "--set", "seeds=[0]", "status", "--no-squeue"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "results/t" in out and "train champion seed0" in out and "not started" in out
    assert main(["status", "results/nowhere"]) == 1
    assert "no such results folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "line",
    [
        "training stopped (received SIGTERM); resumable state in x/last.ckpt (epoch 3)",
        "shard 0 stopped (received SIGTERM): 2 of 6 tasks saved; run again to go on",
        "worker stopped between trials (received SIGTERM); run again to go on",
        "worker stopped (received SIGTERM); the trial was requeued; run again to go on",
        *(stop_line(job, "received SIGTERM", "saved; run again")
          for job in ("training", "shard 0", "worker", "re-arc shard 0-of-2")),
    ],
    ids=["training", "adaptation shard", "sweep worker between trials", "sweep worker",
         *(f"{job}, as the job state says it" for job in ("training", "shard", "worker",
                                                           "re-arc shard"))],
)  # fmt: skip
def test_every_stop_line_of_the_lifecycle_reads_as_stopped_will_resume(line):
    from arctax.status import STOPPED, exit_reason

    assert exit_reason(f"some output\n{line}\n") == (STOPPED, "exit 75: received SIGTERM")


def test_adaptation_shards_of_a_prepared_test_set_and_no_dropped_model(tree):
    """With adaptation on and the test set prepared, the shards are counted from its manifest
    (this crashed: the shard count took the typed block and status passed a dict); a model set
    to null is not a job."""
    workdir, run = tree
    cfg = load_settings(overrides={**OVERRIDES, "models": {"decoder_only": None},
                                 "adapt": {"enabled": True, "tasks_per_job": 4}})  # fmt: skip
    tasks = [f"t{i}" for i in range(10)]
    write(run / "data/test/arcagi1_eval/manifest.json", json.dumps({"splits": {"test": tasks}}))
    got = rows(cfg, run, workdir)
    assert {"adapt champion/seed0 0-of-3", "adapt encoder_decoder/seed0 2-of-3"} <= set(got)
    assert not any("decoder_only" in name for name in got), sorted(got)


def a_dead_owner(workdir: Path, host: str | None = None) -> dict:
    """Snakemake's lock with the owner record of a driver that died (its pid exited)."""
    import subprocess
    import sys

    from arctax.lifecycle.driver import record_owner

    snakemake_running(workdir)
    rec = record_owner(workdir, ["0.output.lock"], ["snakemake", "all", "--profile", "p"])
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    owner = {**json.loads(rec.read_text()), "pid": p.pid}
    if host:
        owner["host"] = host
    rec.write_text(json.dumps(owner))
    return owner


def test_a_lock_whose_driver_died_is_not_a_running_snakemake(cfg, tree):
    workdir, run = tree
    owner = a_dead_owner(workdir)
    mark_incomplete(workdir, train_out(run) / "best.ckpt", "77")
    study = st.study_status(cfg, run, workdir, use_squeue=False)
    assert not study.snakemake_running
    assert {r.job: r for r in study.rows}["train champion seed0"].state == st.STOPPED
    assert study.lock_note == (
        f"Snakemake's lock is stale (its driver (pid {owner['pid']} on {owner['host']}) is "
        "gone): run your snakemake command again, it removes the lock and goes on"
    )
    assert study.lock_note in st.format_status(study)
    # the driver lives (this very process): the lock holds, the job is queued
    from arctax.lifecycle.driver import record_owner

    for rec in (workdir / ".snakemake" / "locks").glob("arctax-owner-*.json"):
        rec.unlink()
    record_owner(workdir, ["0.output.lock"], ["snakemake"])
    study = st.study_status(cfg, run, workdir, use_squeue=False)
    assert study.snakemake_running and study.lock_note == ""


def test_a_lock_of_another_host_says_what_to_run(cfg, tree):
    workdir, run = tree
    a_dead_owner(workdir, host="login-7")  # its pid means nothing here
    study = st.study_status(cfg, run, workdir, use_squeue=False)
    assert study.snakemake_running  # not provably dead: counted as running
    assert "cannot be checked from here" in study.lock_note
    assert "`snakemake all --profile p --unlock`" in study.lock_note


def test_orphans_of_a_dead_driver_running_and_finished(cfg, tree):
    workdir, run = tree
    a_dead_owner(workdir)
    mark_incomplete(workdir, train_out(run) / "best.ckpt", "77")
    ev = run / "eval" / "arcagi1_eval" / "champion" / "seed0" / "summary.json"
    mark_incomplete(workdir, ev, "78")
    sm = st.Snakemake(workdir, [])
    jobs = {j.label: j for j in st.study_jobs(cfg, run)}
    for out in jobs["evaluate arcagi1_eval champion seed0"].outputs:
        write(out, "{}")  # the orphan finished its outputs after its driver died
    squeue = {"77": "RUNNING"}
    train = st.job_row(jobs["train champion seed0"], sm, 100, squeue)
    assert train.state == st.RUNNING and "its Snakemake is gone" in train.exit
    done = st.job_row(jobs["evaluate arcagi1_eval champion seed0"], sm, 100, squeue)
    assert done.state == st.DONE and "finished without its Snakemake" in done.exit
    assert "a rerun redoes it" in done.exit  # no done marker of this submission
    ev_job = jobs["evaluate arcagi1_eval champion seed0"]
    write(ev_job.done, "{}")  # the orphan's done marker, after its submission
    done = st.job_row(ev_job, sm, 100, squeue)
    assert done.exit == "finished without its Snakemake (the same command again adopts it)"
    pending = st.job_row(jobs["train champion seed0"], sm, 100, {"77": "PENDING (Priority)"})
    assert pending.state == st.QUEUED


def test_status_json(cfg, tree, capsys, monkeypatch):
    workdir, _run = tree
    monkeypatch.chdir(workdir)
    assert main(["--set", "run=t", "--set", "seeds=[0]", "status", "--json", "--no-squeue"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_dir"] == "results/t" and not out["snakemake_running"]
    assert {r["state"] for r in out["rows"]} == {st.NOT_STARTED}


def test_a_job_slurm_no_longer_has_is_not_running(cfg, tree):
    """Between a job's end and Snakemake noticing it (its marker still there, its log just
    written): Slurm answered without it, so it is not running (done if its outputs are)."""
    from arctax.lifecycle.driver import record_owner

    workdir, run = tree
    snakemake_running(workdir)
    record_owner(workdir, ["0.output.lock"], ["snakemake"])  # this process: a live driver
    ev = run / "eval" / "arcagi1_eval" / "champion" / "seed0" / "summary.json"
    mark_incomplete(workdir, ev, "500")
    write(run / "logs" / "eval" / "arcagi1_eval" / "champion" / "seed0.log", "decoding\n")
    sm = st.Snakemake(workdir, [])
    job = {j.label: j for j in st.study_jobs(cfg, run)}["evaluate arcagi1_eval champion seed0"]
    assert st.job_row(job, sm, 100, None).state == st.RUNNING  # no Slurm answer: its log moved
    gone = st.job_row(job, sm, 100, {})
    assert gone.state == st.FAILED
    assert gone.exit == "Slurm job 500 ended; Snakemake retries it while it has retries left"
    assert st.job_row(job, sm, 100, {"500": "RUNNING"}).state == st.RUNNING
    # squeue -j still lists an ended job (until MinJobAge) in its final state: not running,
    # though its log just moved (chaos found it: a job whose step was killed)
    ended = st.job_row(job, sm, 100, {"500": "FAILED (NonZeroExitCode)"})
    assert ended.state == st.FAILED and ended.exit.startswith("Slurm job 500 ended")
    assert st.job_row(job, sm, 100, {"500": "COMPLETING"}).state == st.FAILED  # cleaned up
    for out in job.outputs:
        write(out, "{}")
    done = st.job_row(job, sm, 100, {})
    assert (done.state, done.exit) == (
        st.DONE,
        "finished (Slurm job 500); Snakemake is recording it",
    )


def test_a_job_whose_slurm_job_ended_and_whose_marker_snakemake_removed_is_not_running(cfg, tree):
    """Between a failed attempt and its retry Snakemake holds no marker of the job; its log
    just moved (the attempt was killed). squeue no longer lists the job: not running."""
    from arctax.lifecycle.driver import record_owner

    workdir, run = tree
    snakemake_running(workdir)
    record_owner(workdir, ["0.output.lock"], ["snakemake"])  # this process: a live driver
    write(workdir / "logs" / "slurm" / "rule_evaluate" / "arcagi1_eval_champion_0" / "957.log",
          "srun: error: vm: task 0: Killed\n")  # fmt: skip
    write(run / "logs" / "eval" / "arcagi1_eval" / "champion" / "seed0.log", "decoding\n")
    sm = st.Snakemake(workdir, [workdir / "logs" / "slurm"])
    job = {j.label: j for j in st.study_jobs(cfg, run)}["evaluate arcagi1_eval champion seed0"]
    gone = st.job_row(job, sm, 100, {})
    assert (gone.state, gone.slurm) == (st.FAILED, "957")
    assert st.job_row(job, sm, 100, {"957": "RUNNING"}).state == st.RUNNING
    assert st.job_row(job, sm, 100, None).state == st.RUNNING  # Slurm silent: its files moved
