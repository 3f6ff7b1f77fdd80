"""The job lifecycle shared by training, the sweep worker and adaptation (arctax.lifecycle)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from arctax.lifecycle import STOPPED_EXIT, StopFlag


def test_the_stop_exit_code_is_ex_tempfail():
    assert STOPPED_EXIT == 75  # Snakemake retries it; the profiles' retries rely on it


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_sets_the_reason_and_the_handlers_come_back(sig):
    before = signal.getsignal(sig)
    with StopFlag(margin_s=30) as stop:
        assert stop() is None
        os.kill(os.getpid(), sig)
        assert stop() == f"received {sig.name}"
        stop.install()  # installing again (Lightning's own handler in between) keeps the first
    assert signal.getsignal(sig) == before


def test_the_deadline_stops_within_the_margin_of_the_job_end():
    stop = StopFlag(margin_s=60, deadline=time.time() + 3600)
    assert stop() is None
    stop.deadline = time.time() - 1
    assert stop() == "within 60s of the Slurm time limit"


def test_no_slurm_job_means_no_deadline(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    stop = StopFlag(margin_s=60)
    assert stop.watch_slurm_job() is None and stop.deadline is None
    # a job id squeue does not know (or no squeue at all): still no deadline, no error
    assert stop.watch_slurm_job("999999999") is None and stop.deadline is None


# ---------------------------------------------------------------- the one job state


def test_a_state_resumed_whole_is_resumed_set_aside_or_cleared(tmp_path):
    """A training's state: resumed on the same fingerprint, set aside on another (never
    reused), cleared once finished (running a finished job again runs it again)."""
    from arctax.lifecycle import JobState, fingerprint

    folder = tmp_path / "state"
    fp = fingerprint({"model": "m", "seed": 1})
    job = JobState(folder, fp, job="training")
    assert job.begin("last.ckpt", "finished.json") is None  # nothing yet: the fingerprint kept
    (folder / "last.ckpt").write_text("epoch 3")
    assert job.begin("last.ckpt", "finished.json") == folder / "last.ckpt"
    assert JobState(folder, fp).resume_point("last.ckpt", "finished.json") == folder / "last.ckpt"
    other = JobState(folder, fingerprint({"model": "m", "seed": 2}))
    assert other.resume_point("last.ckpt", "finished.json") is None  # reads only
    with pytest.warns(UserWarning, match="state from a different config"):
        assert other.begin("last.ckpt", "finished.json") is None
    assert not (folder / "last.ckpt").exists() and len(list(tmp_path.glob("state.stale-*"))) == 1
    (folder / "last.ckpt").write_text("epoch 1")
    other.mark_done("finished.json", {"epochs": 1})
    assert other.done("finished.json") and other.resume_point("last.ckpt", "finished.json") is None
    assert other.begin("last.ckpt", "finished.json") is None and not other.done("finished.json")
    assert not (folder / "last.ckpt").exists()  # cleared, not resumed


def test_records_are_reused_only_with_their_fingerprint(tmp_path):
    from arctax.lifecycle import JobState

    job = JobState(tmp_path, "fp1")
    saved = job.save("stats/t1", {"n": 3})
    assert saved == {"n": 3, "fingerprint": "fp1"} and job.record("stats/t1") == saved
    assert JobState(tmp_path, "fp2").record("stats/t1") is None  # made otherwise: redone
    (tmp_path / "t2.json").write_text("{not json")
    assert job.record("t2") is None and job.record("absent") is None
    job.forget(["stats/t1"])
    assert job.record("stats/t1") is None


def test_a_stopped_job_prints_its_stop_line_and_exits_75(capsys):
    from arctax.lifecycle import STOP_LINE, JobState, stop_line

    with JobState("unused", margin_s=5) as job:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert job.stop() == "received SIGUSR1"
        with pytest.raises(SystemExit) as e:
            job.stopped(stop_line("shard 2", job.stop(), "4 of 6 tasks saved"))
    assert e.value.code == STOPPED_EXIT
    err = capsys.readouterr().err
    assert err == "shard 2 stopped (received SIGUSR1): 4 of 6 tasks saved\n"
    assert STOP_LINE.findall(err) == ["received SIGUSR1"]
