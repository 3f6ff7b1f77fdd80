"""A job's life on a cluster: when it must stop, and how it says "run me again".

One place for what training, the sweep worker, adaptation and DDP ranks share:

- the stop signals: SIGUSR1 (Slurm's ``--signal``) and SIGTERM (``scancel``, preemption);
- the job's end: ``margin_s`` before the time limit Slurm reports for ``$SLURM_JOB_ID``;
- :data:`STOPPED_EXIT` (75, EX_TEMPFAIL): the job stopped cleanly with its resumable state
  saved; Snakemake retries it and the retry goes on from there.

A :class:`StopFlag` is asked at safe points (a batch end, between trials, between tasks); it
never interrupts anything by itself. Torch-free.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

STOPPED_EXIT = 75  # EX_TEMPFAIL: the job should be retried, and will resume
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


def slurm_job_end(job_id: str) -> float | None:
    """Epoch seconds at which Slurm job ``job_id`` hits its time limit, if Slurm says."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%e"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return time.mktime(time.strptime(out, "%Y-%m-%dT%H:%M:%S"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


class StopFlag:
    """Why this job must stop, if it must: a stop signal, or ``margin_s`` before the end of
    its Slurm job. Call it for the reason (``None``: go on).

    Use as a context manager (handlers installed on entry, the previous ones put back on
    exit), or :meth:`install` / :meth:`restore` where a framework installs its own handlers
    in between (Lightning: ``PreemptionGuard`` installs again at train start). Outside the
    main thread no handler can be installed and the deadline alone works.
    """

    def __init__(self, margin_s: float = 0.0, deadline: float | None = None) -> None:
        self.margin_s = margin_s
        self.deadline = deadline
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def watch_slurm_job(self, job_id: str | None = None) -> float | None:
        """Set the deadline from the Slurm job (``$SLURM_JOB_ID`` by default); its end time."""
        job = job_id or os.environ.get("SLURM_JOB_ID")
        end = slurm_job_end(job) if job else None
        if end is not None:
            self.deadline = end - self.margin_s
        return end

    def __call__(self) -> str | None:
        if self.reason is None and self.deadline is not None and time.time() >= self.deadline:
            self.reason = f"within {self.margin_s:.0f}s of the Slurm time limit"
        return self.reason

    def _handler(self, signum: int, frame: Any) -> None:
        self.reason = f"received {signal.Signals(signum).name}"

    def install(self) -> None:
        """Take the stop signals (again); the first handlers replaced are kept for restore."""
        try:
            for s in STOP_SIGNALS:
                self._previous.setdefault(s, signal.signal(s, self._handler))
        except ValueError:  # not the main thread: rely on the deadline
            pass

    def restore(self) -> None:
        """Put the handlers that were there before :meth:`install` back."""
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def __enter__(self) -> StopFlag:
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()
