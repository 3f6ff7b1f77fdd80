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
- one writer per job (:meth:`JobState.claim`): an owner file beside the state folder, created
  exclusively; a second copy of the job (a driver started again while the first one's Slurm
  job still runs) waits for the owner to end and adopts what it finished, and takes over from
  an owner that is provably dead (:mod:`arctax.lifecycle.owners`);
- :data:`STOPPED_EXIT` (75, EX_TEMPFAIL): the job stopped cleanly with its state saved;
  Snakemake retries it and the retry goes on from there. The stop line it prints
  (:func:`stop_line`, read back by ``arctax status`` with :data:`STOP_LINE`) says why.

Torch-free.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from arctax.io import atomic_write_text, loads_json, read_bytes, write_json

T = TypeVar("T")
STOPPED_EXIT = 75  # EX_TEMPFAIL: the job should be retried, and will resume
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
# a job's stop line (stop_line): "<job> stopped (<reason>): <what is saved>"
STOP_LINE = re.compile(
    r"(?:training|evaluation|shard \d+|worker|re-arc shard \d+-of-\d+) stopped(?: between trials)? "
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
    return _slurm_time(job_id, "%e")


def slurm_job_submitted(job_id: str | None = None) -> float | None:
    """Epoch seconds at which Slurm job ``job_id`` (default ``$SLURM_JOB_ID``) was submitted,
    if Slurm says (to the second)."""
    job = job_id or os.environ.get("SLURM_JOB_ID")
    return _slurm_time(job, "%V") if job else None


def requested_since() -> float | None:
    """Since when the work of this job has been asked for: the start of the Snakemake driver
    running in this working directory (:func:`driver.driver_since`: a retry of the job in the
    same run counts from there too), else this Slurm job's submission; None when neither is
    known (a job run by hand)."""
    from arctax.lifecycle.driver import driver_since

    since = driver_since(".")
    return since if since is not None else slurm_job_submitted()


def _slurm_time(job_id: str, field: str) -> float | None:
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", field],
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
OWNER_POLL_S = 10.0  # how often a waiting copy looks at the owner again
UNWRITTEN_OWNER_S = 60.0  # an owner file still empty after this: its writer died creating it


MAX_RECORD_BYTES = 1 << 20  # an owner file or done marker: a few hundred bytes when whole


def read_owner(path: str | Path) -> dict[str, Any] | None:
    """An owner file's (or done marker's) record, or None while it is absent, empty, unreadable
    or not one (read bounded: 1 MiB, a regular file, JSON depth and cost; arctax.io)."""
    try:
        rec = loads_json(read_bytes(path, MAX_RECORD_BYTES, "record"), str(path))
    except (OSError, ValueError):  # ReadError is a ValueError
        return None
    return rec if isinstance(rec, dict) else None


def describe_owner(rec: Mapping[str, Any]) -> str:
    """Who an owner is, in a few words: pid, host, Slurm job."""
    job = f", Slurm job {rec['slurm_job_id']}" if rec.get("slurm_job_id") else ""
    return f"pid {rec.get('pid')} on {rec.get('host')}{job}"


class JobState:
    """One job's resumable state: ``folder``, kept outside the job's declared outputs, and
    ``fp`` (:func:`fingerprint`), what the state must match to be reused.

    A job keeps either a state resumed whole (a training's checkpoint: :meth:`begin` on the
    one writer, :meth:`resume_point` on the others), or one record per finished item (an
    adaptation shard's tasks, a re-arc shard's tasks: :meth:`record`, :meth:`save`). A done
    marker (:meth:`done`, :meth:`mark_done`) says the job finished: its outputs are written.
    Used as a context manager it takes the stop signals (and the Slurm deadline) for the job;
    ask :attr:`stop` at safe points and end with :meth:`stopped` (exit 75, a retry resumes).
    One writer per job: :meth:`claim` before the job reads or writes its state, :meth:`release`
    when it ends (a copy of the same job waits meanwhile, then adopts what it finished).
    """

    def __init__(
        self,
        folder: str | Path,
        fp: str | None = None,
        margin_s: float = 0.0,
        job: str = "job",
        owner: str = "owner",
    ) -> None:
        self.folder = Path(folder)
        self.fp = fp
        self.stop = StopFlag(margin_s)
        self.job = job  # what the messages call it: "training", "shard 0", ...
        # beside the folder (begin() may replace the folder whole), one per job: the shards of
        # one run share a folder
        self.owner_file = self.folder.with_name(f"{self.folder.name}.{owner}.json")
        self._owned = False

    # ---------------------------------------------------------------- one writer per job
    def claim(self, finished: str | None = None, poll_s: float | None = None) -> Any:
        """Become the job's one writer: create its owner file (:func:`owners.owner_record`)
        exclusively, so one copy wins, on a shared file system too. Call before the job reads
        or writes its state; :meth:`release` at its end (any end: a kill -9 leaves the file,
        and the next copy proves its owner dead).

        Another copy owns it: when that owner is provably dead (its pid gone on this host, its
        Slurm job ended: :func:`owners.dead_reason`), take over with one line (the state is
        resumed as after any stop); while it may be alive, wait, saying once who it is and
        what to do if it is in fact gone. A stop signal while waiting exits 75.

        Returns the ``finished`` marker's record when another copy finished the job for this
        one: the copy it waited for, or one that finished after the work was asked for
        (:func:`requested_since`: the running driver's start, else this Slurm job's
        submission), e.g. a dead driver's orphan that ended while this copy was queued (the
        caller adopts it: its outputs are written, or :meth:`restore` puts them back); else
        None. A run finished before that is not adopted: running a finished job again is a
        request to run it again.
        """
        from arctax.lifecycle.owners import dead_reason, owner_record

        poll_s = OWNER_POLL_S if poll_s is None else poll_s
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        me = owner_record(job=self.job, fingerprint=self.fp)
        waited: dict[str, Any] | None = None
        since = 0.0  # when this copy began to wait
        with StopFlag(self.stop.margin_s) as stop:
            while True:
                try:
                    fd = os.open(self.owner_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    other = read_owner(self.owner_file)
                    reason = self._dead(other, me, dead_reason)
                    if reason is not None:
                        self._take_over(reason, other)
                        waited = None  # it did not finish: nothing to adopt
                        continue
                    if waited is None:
                        self._event("waits", other)
                        print(
                            f"{self.job}: another copy of this job owns {self.folder} "
                            f"({describe_owner(other or {})}); waiting for it to end (one "
                            f"writer per job). If it is gone for good, delete "
                            f"{self.owner_file} and this copy goes on",
                            file=sys.stderr,
                            flush=True,
                        )
                    waited = other or {}
                    since = since or time.time()
                    if stop():
                        self.stopped(stop_line(self.job, stop(), "waiting for its other copy"))
                    time.sleep(poll_s)
                    continue
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
                    f.flush()
                    os.fsync(f.fileno())
                self._owned = True
                self._event("owns")
                break
        asked = requested_since() if waited is None and finished is not None else None
        if finished is not None and (
            (waited is not None and self._done_since(finished, since))
            or (asked is not None and self._done_since(finished, asked))
        ):
            waited = waited if waited is not None else {"slurm_job_id": "an earlier copy"}
            self._event("adopts", waited)
            print(
                f"{self.job}: its other copy ({describe_owner(waited)}) finished it; adopted",
                file=sys.stderr,
                flush=True,
            )
            rec = read_owner(self.folder / finished) or {}
            return {k: v for k, v in rec.items() if k != "outputs_kept"}
        return None

    def run(
        self,
        work: Callable[[], T],
        finished: str,
        outputs: Iterable[str | Path],
        adopt: Callable[[dict[str, Any]], T],
    ) -> T:
        """The job as its one writer: :meth:`claim`, then ``work()`` (which writes the outputs,
        then the ``finished`` marker), :meth:`release` at any end. A copy that waited for
        another which finished the job meanwhile returns ``adopt(marker record)`` instead,
        when every one of ``outputs`` is there or put back (else it does the work itself)."""
        adopted = self.claim(finished)
        outputs = list(outputs)
        try:
            if adopted is not None and self.restore(finished, outputs):
                return adopt(adopted)
            return work()
        finally:
            self.release()

    @property
    def events_file(self) -> Path:
        """The job's ownership events, one JSON line each, every copy's (beside the owner
        file): who owned, waited, adopted, took over, released, by pid and Slurm job."""
        return self.owner_file.with_suffix(".log")

    def _event(self, event: str, other: Mapping[str, Any] | None = None, why: str = "") -> None:
        rec = {"t": time.time(), "event": event, "pid": os.getpid(),
               "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "job": self.job}  # fmt: skip
        if other is not None:
            rec["other"] = {k: other.get(k) for k in ("pid", "host", "slurm_job_id")}
        if why:
            rec["why"] = why
        # a record for people and the chaos checks; it never fails the job
        with contextlib.suppress(OSError), open(self.events_file, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _done_since(self, marker: str, since: float) -> bool:
        """The done ``marker`` was written after ``since`` (by the copy waited for)."""
        try:
            return (self.folder / marker).stat().st_mtime >= since - 1.0
        except OSError:
            return False

    def _dead(self, other: dict[str, Any] | None, me: dict[str, Any], dead_reason: Any) -> Any:
        """Why the owner file's writer is dead (None: it may be alive)."""
        if other is None:  # empty: being written now, or its writer died creating it
            try:
                age = time.time() - self.owner_file.stat().st_mtime
            except OSError:
                return "gone"  # released meanwhile: try again
            return "its owner file stayed empty" if age > UNWRITTEN_OWNER_S else None
        return dead_reason(other, me, role="copy")

    def _take_over(self, reason: str, dead: dict[str, Any] | None) -> None:
        """Set a dead owner's file aside (one rename: of two copies proving it dead at once,
        one takes it) and say so. Had another copy taken over and written its own file in
        between, that file is put back (a hard link: it fails only if a third copy created
        one in the same instant)."""
        aside = self.owner_file.with_name(f"{self.owner_file.name}.dead-{os.getpid()}")
        try:
            os.replace(self.owner_file, aside)
        except FileNotFoundError:
            return  # another copy took it first, or it was released
        moved = read_owner(aside)
        if moved is not None and moved != dead:  # a live copy's, not the dead one's
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.owner_file)
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        if reason != "gone":
            self._event("takes over", dead, reason)
            print(f"{self.job}: took over {self.folder} ({reason})", file=sys.stderr, flush=True)

    def release(self) -> None:
        """End this copy's ownership (after its done marker, so a waiting copy adopts)."""
        if self._owned:
            self.owner_file.unlink(missing_ok=True)
            self._owned = False
            self._event("releases")

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

    def mark_done(
        self, marker: str, info: Mapping[str, Any], outputs: Iterable[str | Path] = ()
    ) -> None:
        """Record that the job finished (after its outputs are written). ``outputs`` are kept
        beside the marker as hard links (no space; a copy across file systems), so a copy of
        the job that adopts this run can put them back after Snakemake deleted them
        (:meth:`restore`)."""
        kept = self.folder / f"{marker}.outputs"
        shutil.rmtree(kept, ignore_errors=True)
        saved = {}
        for i, out in enumerate(Path(o) for o in outputs):
            keep = kept / f"{i}-{out.name}"
            keep.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(out, keep)
            except OSError:
                shutil.copy2(out, keep)
            saved[str(out)] = keep.name
        write_json(self.folder / marker, {**dict(info), "outputs_kept": saved})

    def restore(self, marker: str, outputs: Iterable[str | Path]) -> bool:
        """Put back the ``outputs`` a finished run kept (:meth:`mark_done`): True when every
        one is there afterwards (each linked back whole, or already there)."""
        rec = read_owner(self.folder / marker) or {}
        kept = rec.get("outputs_kept") or {}
        for out in (Path(o) for o in outputs):
            if out.is_file():
                continue
            name = kept.get(str(out))
            src = self.folder / f"{marker}.outputs" / str(name)
            if not name or not src.is_file():
                return False
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.adopt-{os.getpid()}.tmp")
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copy2(src, tmp)
            os.replace(tmp, out)
        return True

    def unmark_done(self, marker: str) -> None:
        """Drop the done marker and the outputs it kept (a finished job run again)."""
        (self.folder / marker).unlink(missing_ok=True)
        shutil.rmtree(self.folder / f"{marker}.outputs", ignore_errors=True)

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


DONE = "done.json"  # one_writer's done marker in the job's state folder


def one_writer(
    state_dir: str | Path, job: str, outputs: Iterable[str | Path], work: Callable[[], T]
) -> T | None:
    """Run ``work``, a job with no resumable state of its own (an evaluation), as the one
    writer of its outputs (:meth:`JobState.run`; ``state_dir``: the job's state in the
    results layout, which holds its owner file and done marker). A copy started while another
    runs the same job waits for it, and returns None when that one wrote every output."""
    state = JobState(state_dir, job=job)

    outputs = list(outputs)

    def marked() -> T:
        state.unmark_done(DONE)
        result = work()
        state.mark_done(DONE, {"finished": time.time()}, outputs)
        return result

    return state.run(marked, DONE, outputs, adopt=lambda _: None)
