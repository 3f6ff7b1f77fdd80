"""A job's life on a cluster: its resumable state, when it must stop, how it says "run me
again". One place for what a training, an adaptation shard, a sweep worker and a re-arc shard
share (each uses it in a few lines):

- :func:`fingerprint`: the one hash of what a result depends on (a state, a task's record, a
  prepared cache is reused only on an equal one);
- :class:`JobState`: the job's state folder, outside its declared outputs (Snakemake deletes
  those before a retry): a state resumed whole (a training's checkpoint) or one record per
  finished item (a shard's tasks), the done markers, and how the job stops;
- the stop signals, SIGUSR1 (Slurm's ``--signal``) and SIGTERM (``scancel``, preemption), and
  the job's end, ``margin_s`` before the time limit Slurm reports for ``$SLURM_JOB_ID``
  (:class:`StopFlag`: asked at safe points, a batch end, between trials, between tasks; it
  never interrupts anything by itself);
- :data:`STOPPED_EXIT` (75, EX_TEMPFAIL): the job stopped cleanly with its state saved;
  Snakemake retries it and the retry goes on from there. The stop line it prints
  (:func:`stop_line`, read back by ``arctax status`` with :data:`STOP_LINE`) says why.

Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from arctax.io import atomic_write_text, write_json

STOPPED_EXIT = 75  # EX_TEMPFAIL: the job should be retried, and will resume
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
# a job's stop line (stop_line): "<job> stopped (<reason>): <what is saved>"
STOP_LINE = re.compile(
    r"(?:training|shard \d+|worker|re-arc shard \d+-of-\d+) stopped(?: between trials)? "
    r"\((.*?)\)[:;]"
)


class Stopped(RuntimeError):
    """A job stopped at a safe point, on a stop signal or near its Slurm time limit; what it
    finished is saved, and a retry goes on from there (the message: the reason)."""


def stop_line(job: str, reason: str, saved: str) -> str:
    """The line a stopped job prints before it exits 75 (``arctax status`` reads it back)."""
    return f"{job} stopped ({reason}): {saved}"


def fingerprint(what: Mapping[str, Any]) -> str:
    """The one fingerprint of arctax: the sha256 of ``what`` (what a result depends on) as
    canonical JSON. A saved state, a task's record or a cache is reused only on an equal one."""
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


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


FINGERPRINT = "fingerprint.txt"  # a state resumed whole: what it must match


class JobState:
    """One job's resumable state: ``folder``, kept outside the job's declared outputs, and
    ``fp`` (:func:`fingerprint`), what the state must match to be reused.

    A job keeps either a state resumed whole (a training's checkpoint: :meth:`begin` on the
    one writer, :meth:`resume_point` on the others), or one record per finished item (an
    adaptation shard's tasks, a re-arc shard's tasks: :meth:`record`, :meth:`save`). A done
    marker (:meth:`done`, :meth:`mark_done`) says the job finished: its outputs are written.
    Used as a context manager it takes the stop signals (and the Slurm deadline) for the job;
    ask :attr:`stop` at safe points and end with :meth:`stopped` (exit 75, a retry resumes).
    One writer per job is the caller's promise (Snakemake runs a job once at a time); the
    done marker is where a check "finished already: adopt it" reads.
    """

    def __init__(
        self, folder: str | Path, fp: str | None = None, margin_s: float = 0.0, job: str = "job"
    ) -> None:
        self.folder = Path(folder)
        self.fp = fp
        self.stop = StopFlag(margin_s)
        self.job = job  # what the messages call it: "training", "shard 0", ...

    def __enter__(self) -> JobState:
        self.stop.install()
        self.stop.watch_slurm_job()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.restore()

    def stopped(self, line: str) -> NoReturn:
        """Print the job's stop line (:func:`stop_line`) and exit 75: a retry resumes."""
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(STOPPED_EXIT)

    # ---------------------------------------------------------------- done markers
    def done(self, marker: str) -> bool:
        """Whether the job finished (its done ``marker`` is in the folder)."""
        return (self.folder / marker).exists()

    def mark_done(self, marker: str, info: Mapping[str, Any]) -> None:
        """Record that the job finished (after its outputs are written)."""
        write_json(self.folder / marker, dict(info))

    def unmark_done(self, marker: str) -> None:
        """Drop the done marker (a finished job run again)."""
        (self.folder / marker).unlink(missing_ok=True)

    # ---------------------------------------------------------------- a state resumed whole
    def begin(self, resume: str, finished: str) -> Path | None:
        """Ready the folder for this run and return the file to resume from (``resume`` in the
        folder), or None. The job's only writer calls this (under DDP, rank 0; the others call
        :meth:`resume_point`, which writes nothing).

        A finished state (its ``finished`` marker there) is cleared: its results were copied
        to the outputs, and running a finished job again is a request to run it again, not to
        resume. A stale one (another fingerprint) is set aside beside the folder, not reused.
        Either leaves by one atomic rename, so a reader sees the state whole or gone, and comes
        to the same answer as this call.
        """
        if self.done(finished):
            print(
                f"{self.folder}: previous {self.job} finished; {self.job} again from scratch",
                flush=True,
            )
            gone = self.folder.with_name(f"{self.folder.name}.finished-{time.time_ns()}")
            os.replace(self.folder, gone)
            shutil.rmtree(gone)
        self.folder.mkdir(parents=True, exist_ok=True)
        point = self.resume_point(resume, finished)
        if point is not None:
            return point
        if (self.folder / resume).exists():
            stale = self.folder.with_name(f"{self.folder.name}.stale-{int(time.time())}")
            warnings.warn(
                f"{self.folder}: state from a different config; moved to {stale}, starting fresh",
                stacklevel=2,
            )
            os.replace(self.folder, stale)
            self.folder.mkdir(parents=True)
        atomic_write_text(self.folder / FINGERPRINT, f"{self.fp}\n")
        return None

    def resume_point(self, resume: str, finished: str) -> Path | None:
        """The file a run with this fingerprint resumes from, if any (reads only). Agrees with
        :meth:`begin` before, during or after it: a finished state is never resumed, a stale
        one never matches."""
        try:
            if self.done(finished) or (self.folder / FINGERPRINT).read_text().strip() != self.fp:
                return None
        except OSError:
            return None
        path = self.folder / resume
        return path if path.exists() else None

    # ---------------------------------------------------------------- one record per item
    def record(self, key: str) -> dict[str, Any] | None:
        """The saved record of item ``key`` (``<folder>/<key>.json``) when it was made with
        this fingerprint; None when absent, unreadable or made otherwise."""
        try:
            rec = json.loads((self.folder / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) and rec.get("fingerprint") == self.fp else None

    def save(self, key: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Save item ``key``'s record with this fingerprint, atomically, at once; return it."""
        rec = {**record, "fingerprint": self.fp}
        write_json(self.folder / f"{key}.json", rec)
        return rec

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the records of ``keys`` (a finished shard run again starts over)."""
        for key in keys:
            (self.folder / f"{key}.json").unlink(missing_ok=True)
