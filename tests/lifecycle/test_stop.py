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
