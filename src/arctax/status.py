"""``arctax status``: every job of a study at a glance, from what the workflow already writes.

Read-only: it opens files and lists folders, never writes, never takes Snakemake's lock, so it
runs beside a live workflow (on a login node while the jobs run elsewhere) or after it. What
it reads, per job:

- its declared outputs (all there and not marked incomplete: done);
- Snakemake's ``.snakemake/incomplete/<base64 of the output path>`` markers (a started job's;
  the marker holds the Slurm job id) and ``.snakemake/locks/`` with its owner record (a
  Snakemake is running, or its driver died and left the lock: :mod:`arctax.lifecycle.driver`);
- the job's log (``results/<run>/logs/...``), and for trainings the attempts log beside the
  resumable state (``.state/train/<model>/seed<s>.attempts.log``: one header per attempt, the
  stop line of an attempt that exited 75 to be resumed) and ``.state/.../metrics.csv`` (one
  row per finished epoch: progress, best val_loss, seconds per epoch);
- the Slurm executor's logs (``logs/slurm/rule_<rule>/<wildcards>/<jobid>.log``: one per
  submission) and ``squeue`` where it exists (queued or running; tolerated missing).

The jobs and every path come from the one results layout (:mod:`arctax.layout`: what the
workflow's rules declare), planned from the settings as the workflow plans them (models, seeds,
test sets, adaptation, re-arc, the sweep); jobs found on disk that the settings do not name
(another seed, another shard count) are listed too. Torch-free.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import socket
import subprocess
import time
from base64 import urlsafe_b64encode
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from arctax.check import Plan
from arctax.check import plan as study_plan
from arctax.layout import (
    RULES,
    Job,
    Layout,
    adapt_shard_count,
    began,
    found_jobs,
    jobs,
    rearc_shard_count,
)
from arctax.lifecycle import STOP_LINE, STOPPED_EXIT
from arctax.lifecycle.driver import DriverLock, driver_locks, held, unlock_command
from arctax.lifecycle.owners import SLURM_LIVE
from arctax.settings import Settings

NOT_STARTED = "not started"
QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
STOPPED = "stopped-will-resume"  # exit 75 (or an interrupted Snakemake): a rerun resumes it
INTERRUPTED = "interrupted"  # started, then Snakemake stopped: rerun-incomplete runs it again
STALLED = "stalled?"  # no Snakemake record, no end line, no output for a long while
# squeue states of a job waiting to start (SLURM_LIVE: its processes may run; others: ended)
SLURM_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                "RESV_DEL_HOLD"}  # fmt: skip
STATES = [RUNNING, QUEUED, STOPPED, INTERRUPTED, STALLED, FAILED, NOT_STARTED, DONE]

ATTEMPT_HEADER = re.compile(r"^=== attempt started (\S+) on (\S+).*, Slurm job (\S+) ===")
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Killed)\b.*")
SLURM_END = re.compile(
    r".*(CANCELLED AT .*|DUE TO TIME LIMIT.*|DUE TO PREEMPTION.*|oom[-_ ]kill.*|"
    r"Out Of Memory.*|NODE FAIL.*)",
    re.IGNORECASE,
)


@dataclass
class Row:
    """What ``arctax status`` shows of one job."""

    job: str
    state: str
    progress: str = ""
    best: str = ""
    per_epoch: str = ""
    left_s: float | None = None
    attempts: int = 0
    exit: str = ""
    slurm: str = ""
    epochs: tuple[int, int] | None = None  # (done, max) for trainings
    extra: dict[str, Any] = field(default_factory=dict)


def study_jobs(s: Settings, out: Path) -> list[Job]:
    """The study's jobs, as its workflow plans them (:func:`arctax.layout.jobs`; the sweep's
    when it has begun), then any job found in ``out/logs`` that the settings do not name."""
    try:
        plan = study_plan(s)
    except ValueError:  # a config the workflow would refuse: its jobs by their logs alone
        plan = Plan({}, "", False, "bootstrap" if s.champion.bootstrap else "checkpoint", ())
    adapt_shards = rearc_shards = None
    if plan.adapted:
        manifest = Layout(out).output("prepare_test", "manifest", test_set=plan.adapt_test_set)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            adapt_shards = adapt_shard_count(s, manifest)  # none: the test set is not prepared
    if plan.generate_rearc:
        with contextlib.suppress(OSError, ValueError):
            rearc_shards = rearc_shard_count(s)  # none: no checkout here, its shards by logs
    planned = jobs(s, out, plan, adapt_shards, rearc_shards, began(out, "sweep_worker"))
    return planned + found_jobs(out, planned)


# ---------------------------------------------------------------- what Snakemake recorded


def _record_path(root: Path, key: str) -> Path:
    """Snakemake's file for ``key`` under ``root`` (persistence/file.py: urlsafe base64,
    split into folders of NAME_MAX - 1 characters, each but the last prefixed with @)."""
    b64 = urlsafe_b64encode(key.encode()).decode()
    step = 254
    parts = [b64[i : i + step] for i in range(0, len(b64), step)]
    return root.joinpath(*["@" + s for s in parts[:-1]], parts[-1])


@dataclass
class Snakemake:
    """The read-only view of a working directory's ``.snakemake`` and Slurm logs."""

    workdir: Path
    slurm_log_dirs: list[Path]

    @cached_property
    def locks(self) -> list[DriverLock]:
        """Snakemake's locks of this working directory, with their owners (read once)."""
        return driver_locks(self.workdir)

    @property
    def running(self) -> bool:
        """A Snakemake holds the lock of this working directory and is not provably dead."""
        return bool(held(self.locks))

    def lock_note(self) -> str:
        """What a person must know of the lock: a stale one (its driver is gone) or one that
        cannot be checked from here; empty when there is none, or its driver runs here."""
        notes = []
        for lock in self.locks:
            if not lock.files:
                continue
            if lock.dead:
                notes.append(
                    f"Snakemake's lock is stale ({lock.dead}): run your snakemake command "
                    "again, it removes the lock and goes on"
                )
            elif lock.owner is None or lock.owner.get("host") != socket.gethostname():
                argv = (lock.owner or {}).get("argv")
                cmd = f"`{unlock_command(argv)}`" if argv else (
                    "`snakemake --unlock` with your command's arguments"
                )  # fmt: skip
                notes.append(
                    f"Snakemake's lock ({lock.describe()}) cannot be checked from here: if no "
                    f"snakemake runs in {self.workdir} any more, run {cmd}, then your command"
                )
        return "; ".join(notes)

    def _key(self, path: Path) -> str:
        try:
            return os.path.relpath(path, self.workdir)
        except ValueError:
            return str(path)

    def marker(self, job: Job) -> dict[str, Any] | None:
        """The incomplete marker of a started, unfinished job (``external_jobid``, ``since``)."""
        root = self.workdir / ".snakemake" / "incomplete"
        if not root.is_dir():
            return None
        for out in job.outputs:
            p = _record_path(root, self._key(out))
            try:
                rec = json.loads(p.read_text() or "{}")
                rec["since"] = p.stat().st_mtime
                return rec
            except (OSError, ValueError):
                continue
        return None

    def marker_files(self, job: Job) -> list[Path]:
        """The incomplete marker files of ``job``'s outputs that exist."""
        root = self.workdir / ".snakemake" / "incomplete"
        paths = [_record_path(root, self._key(out)) for out in job.outputs]
        return [p for p in paths if p.is_file()]

    def slurm_logs(self, job: Job) -> list[Path]:
        """The Slurm executor's log of each submission of ``job``, oldest first."""
        wc = "_".join(job.wildcards[w] for w in RULES[job.rule].wildcards).replace("/", "_")
        logs: list[Path] = []
        for d in self.slurm_log_dirs:
            folder = d / f"rule_{job.rule}" / wc if wc else d / f"rule_{job.rule}"
            if folder.is_dir():
                logs += [p for p in folder.glob("*.log") if p.is_file()]
        return sorted(logs, key=lambda p: p.stat().st_mtime)


def squeue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """``{job id: state (reason)}`` of the jobs still queued or running, from ``squeue``; a job
    missing from the answer has ended. None where Slurm cannot say (absent, not answering)."""
    ids = sorted({i for i in job_ids if i and i.isdigit()})
    if not ids:
        return {}
    try:
        res = subprocess.run(
            ["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r"],
            capture_output=True, text=True, timeout=15, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0 and "Invalid job id" not in res.stderr:
        return None  # the controller did not answer (one unknown id alone is this error)
    states = {}
    for line in res.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = parts[1] + ("" if parts[2] in ("None", "") else f" ({parts[2]})")
    return states


# ---------------------------------------------------------------- one job's state


def _read(path: Path | None) -> str:
    try:
        return path.read_text(errors="replace") if path else ""
    except OSError:
        return ""


def _mtime(*paths: Path | None) -> float | None:
    times = []
    for p in paths:
        try:
            if p is not None:
                times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times) if times else None


def last_attempt(history: str) -> tuple[int, str, str | None]:
    """(attempts, the last attempt's text, its Slurm job id) of an attempts log."""
    lines = history.splitlines()
    starts = [i for i, line in enumerate(lines) if ATTEMPT_HEADER.match(line)]
    if not starts:
        return 0, history, None
    m = ATTEMPT_HEADER.match(lines[starts[-1]])
    job = m[3] if m and m[3] != "none" else None
    return len(starts), "\n".join(lines[starts[-1] :]), job


def exit_reason(text: str) -> tuple[str, str] | None:
    """How an attempt ended, from its output: (state, reason), or None if it has not ended.

    The stop line of a training stopped to be resumed (exit 75); else the exception a
    traceback ends with; else what Slurm wrote when it ended the job (time limit, memory).
    """
    stop = STOP_LINE.findall(text)
    if stop:
        return STOPPED, f"exit {STOPPED_EXIT}: {stop[-1]}"
    lines = text.splitlines()
    tb = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    if tb:
        after = [ln.strip() for ln in lines[tb[-1] + 1 :] if EXCEPTION.match(ln)]
        return FAILED, (after[-1] if after else "traceback (see the log)")[:160]
    slurm = [m[1] for ln in lines if (m := SLURM_END.match(ln))]
    if slurm:
        return FAILED, slurm[-1].strip("* ")[:160]
    return None


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a training's metrics.csv (each epoch once), numbers as floats."""
    try:
        with path.open() as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return []
    out = []
    for r in rows:
        try:
            out.append({k: float(v) if v not in ("", None) else math.nan for k, v in r.items()})
        except ValueError:
            continue
    return out


def training_progress(rows: list[dict[str, float]], max_epochs: int) -> dict[str, Any]:
    """Epochs done of ``max_epochs``, best val_loss and its epoch, seconds per epoch (the mean
    of the last five), and the time left at that pace (an upper bound: early stopping)."""
    done = len(rows)
    vals = [
        (r["val_loss"], int(r["epoch"]))
        for r in rows
        if not math.isnan(r.get("val_loss", math.nan))
    ]
    best = min(vals) if vals else None
    secs = [r["seconds"] for r in rows[-5:] if not math.isnan(r.get("seconds", math.nan))]
    per = sum(secs) / len(secs) if secs else None
    left = max(0, max_epochs - done) * per if per is not None else None
    return {"done": done, "max": max_epochs, "best": best, "per_epoch": per, "left_s": left}


def _ongoing(state: str) -> bool:
    """Whether a job squeue lists in ``state`` has not ended: queued or running. ``squeue -j``
    lists an ended job (FAILED, ...) until MinJobAge, and a COMPLETING one is being cleaned
    up after its end: both have ended."""
    return state.split(" ")[0] in SLURM_QUEUED | (SLURM_LIVE - {"COMPLETING"})


def job_row(
    job: Job,
    sm: Snakemake,
    max_epochs: int,
    squeue: Mapping[str, str] | None,
    now: float | None = None,
    stall_s: float = 900.0,
) -> Row:
    """The state of one job (see the module docstring for what is read). ``squeue``: the
    queued and running jobs Slurm listed (a listed id that is absent has ended); None when
    Slurm gave no answer, where the job's files moving stand for running."""
    now = time.time() if now is None else now
    answered, squeue = squeue is not None, squeue or {}
    row = Row(job.label, NOT_STARTED)
    marker = sm.marker(job)
    history = _read(job.history)
    attempts, last, hist_job = last_attempt(history)
    slurm_logs = sm.slurm_logs(job)
    row.attempts = max(attempts, len(slurm_logs))
    row.slurm = (
        (marker or {}).get("external_jobid")
        or hist_job
        or (slurm_logs[-1].stem if slurm_logs else "")
    )
    row.slurm = str(row.slurm or "")
    done = all(p.exists() for p in job.outputs) and marker is None
    rows: list[dict[str, float]] = []
    training = job.metrics is not None
    if training:  # a training: progress from the state's (or output's) metrics
        metrics = job.metrics
        if done and job.outputs[2:3] and job.outputs[2].name == "metrics.csv":
            metrics = job.outputs[2]
        rows = read_metrics(metrics)
        prog = training_progress(rows, max_epochs)
        row.epochs = (prog["done"], prog["max"])
        if rows:
            row.progress = f"epoch {prog['done']}/{prog['max']}"
        if prog["best"]:
            row.best = f"{prog['best'][0]:.4f} @{prog['best'][1]}"
        if prog["per_epoch"] is not None:
            row.per_epoch = f"{prog['per_epoch']:.1f}s"
        row.left_s = prog["left_s"]
    log_text = _read(job.log)
    ended = exit_reason(last or log_text) or exit_reason(
        _read(slurm_logs[-1]) if slurm_logs else ""
    )
    if done:
        row.state, row.left_s = DONE, None
        if training and rows and prog["done"] < max_epochs:
            row.progress += " (early stop)"
        row.exit = "finished" if row.attempts else ""
        return row
    activity = _mtime(job.log, job.history, job.metrics)
    if marker is not None:  # Snakemake started it and has not seen it end
        sq = squeue.get(row.slurm, "")
        sq = sq if _ongoing(sq) else ""
        if not sm.running and sq.startswith(("RUNNING", "COMPLETING", "PENDING", "CONFIGURING")):
            # an orphan: its driver is gone, the Slurm job goes on by itself
            row.state = RUNNING if sq.startswith(("RUNNING", "COMPLETING")) else QUEUED
            row.exit = f"{sq}; its Snakemake is gone (rerun your command)"
        elif not sm.running and all(p.exists() for p in job.outputs):
            row.state, row.left_s = DONE, None  # finished after its driver died
            row.exit = "finished without its Snakemake (" + (
                "the same command again adopts it)"
                if _mtime(job.done) is not None and _mtime(job.done) >= marker["since"]
                else "a rerun redoes it: rerun-incomplete)"
            )
        elif not sm.running:
            row.state = STOPPED if training else INTERRUPTED
            row.exit = ended[1] if ended else "Snakemake stopped; rerun to continue"
        elif sq.startswith(("PENDING", "CONFIGURING")):
            row.state, row.exit = QUEUED, sq
        elif not sq and answered and row.slurm.isdigit():
            # Slurm no longer has its job and Snakemake has not noticed yet
            if all(p.exists() for p in job.outputs):
                row.state, row.left_s = DONE, None
                row.exit = f"finished (Slurm job {row.slurm}); Snakemake is recording it"
            else:
                row.state, row.exit = ended or (FAILED, f"Slurm job {row.slurm} ended")
                row.exit += "; Snakemake retries it while it has retries left"
        elif sq.startswith(("RUNNING", "COMPLETING")) or (
            activity is not None and activity >= marker["since"] - 1
        ):
            row.state = RUNNING
            row.exit = ended[1] if ended and attempts > 1 else ""
        else:
            row.state = QUEUED
            row.exit = sq
        return row
    if ended is not None:
        row.state, row.exit = ended
        if row.state == STOPPED and sm.running and row.slurm in squeue:
            row.state = QUEUED  # resubmitted, waiting
        return row
    if activity is None and not rows:
        row.left_s = None if not training else row.left_s
        return row  # not started
    if sm.running and answered and row.slurm.isdigit() and not _ongoing(squeue.get(row.slurm, "")):
        # a live driver with no record of it: its last Slurm job ended (Snakemake saw it end)
        row.state = FAILED
        row.exit = f"Slurm job {row.slurm} ended; Snakemake retries it while it has retries left"
        return row
    # output and no end, no Snakemake record: run by hand (arctax train) or by a Snakemake
    # killed outright. Running while its files move; stalled when quiet for long.
    quiet = now - (activity or 0)
    pace = 3 * (training_progress(rows, max_epochs)["per_epoch"] or 0)
    row.state = RUNNING if quiet < max(stall_s, pace) else STALLED
    if row.state == STALLED:
        row.exit = f"no output for {_duration(quiet)}"
    return row


# ---------------------------------------------------------------- the table


def _duration(s: float | None) -> str:
    if s is None:
        return ""
    s = round(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class Study:
    """A study's status: one row per job, and what the totals need."""

    run_dir: Path
    rows: list[Row]
    snakemake_running: bool
    squeue: bool
    patience: int | None
    lock_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The status as plain JSON types (``arctax status --json``)."""
        return {
            "run_dir": str(self.run_dir),
            "snakemake_running": self.snakemake_running,
            "squeue": self.squeue,
            "lock_note": self.lock_note,
            "rows": [asdict(r) for r in self.rows],
        }


def study_status(
    s: Settings,
    run_dir: str | Path,
    workdir: str | Path | None = None,
    now: float | None = None,
    use_squeue: bool = True,
) -> Study:
    """The status of every job of the study in ``run_dir`` (``results/<run>``), read-only.

    ``workdir`` is where Snakemake ran (its ``.snakemake``; default: the folder holding
    ``results/``, else the current one).
    """
    out = Path(run_dir)
    if workdir is None:
        workdir = out.parent.parent if out.parent.name == "results" else Path.cwd()
    workdir = Path(workdir)
    sm = Snakemake(workdir, [workdir / "logs" / "slurm", workdir / ".snakemake" / "slurm_logs"])
    every = study_jobs(s, out)
    t69 = s.trial69
    max_epochs = int(s.trainer.max_epochs or t69.max_epochs)
    markers = [sm.marker(j) for j in every]
    ids = [str((m or {}).get("external_jobid") or "") for m in markers]
    ids += [logs[-1].stem for j in every if (logs := sm.slurm_logs(j))]  # ended attempts too
    sq = squeue_states(ids) if use_squeue and any(ids) else None
    rows = [job_row(j, sm, max_epochs, sq, now) for j in every]
    return Study(out, rows, sm.running, sq is not None, t69.early_stopping.patience, sm.lock_note())


def format_status(study: Study, width: int = 52) -> str:
    """The table: one line per job, then the totals and what the estimates mean."""
    head = ["job", "state", "progress", "best val_loss", "s/epoch", "time left", "att",
            "slurm", "last exit"]  # fmt: skip
    cells = []
    for r in study.rows:
        left = f"<= {_duration(r.left_s)}" if r.left_s is not None and r.state != DONE else ""
        cells.append([r.job[:width], r.state, r.progress, r.best, r.per_epoch, left,
                      str(r.attempts or ""), r.slurm, r.exit])  # fmt: skip
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)
    ]
    widths[-1] = len(head[-1])  # the last column is not padded

    def line(c: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip()

    lines = [f"arctax status: {study.run_dir}  ({time.strftime('%Y-%m-%d %H:%M:%S')})",
             line(head), line(["-" * w for w in widths])]  # fmt: skip
    lines += [line(c) for c in cells]
    counts = Counter(r.state for r in study.rows)
    lines.append("")
    lines.append(
        f"{len(study.rows)} jobs: " + ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])
    )
    trainings = [r for r in study.rows if r.epochs is not None]
    if trainings:
        done = sum(r.epochs[0] for r in trainings)
        total = sum(r.epochs[1] if r.state != DONE else r.epochs[0] for r in trainings)
        left = sum(r.left_s or 0 for r in trainings if r.state != DONE)
        lines.append(
            f"trainings: {sum(r.state == DONE for r in trainings)}/{len(trainings)} done, "
            f"{done}/{total} epochs; time left at the current pace <= {_duration(left)} "
            "(one job after another; jobs side by side finish sooner)"
        )
        patience = f" (patience {study.patience})" if study.patience else ""
        lines.append(
            "time left is an upper bound: early stopping on val_loss" + patience
            + " may end a training before its max epoch"
        )  # fmt: skip
    src = ["Snakemake running" if study.snakemake_running else "no Snakemake running here"]
    src.append("squeue" if study.squeue else "no squeue answer (local run or no Slurm here)")
    lines.append("sources: " + "; ".join(src))
    if study.lock_note:
        lines.append(study.lock_note)
    return "\n".join(lines)


def watch(render: Any, seconds: float) -> None:
    """Print ``render()`` every ``seconds`` until interrupted (Ctrl-C), clearing the screen."""
    try:
        while True:
            text = render()
            print("\033[H\033[J" + text, flush=True)
            time.sleep(seconds)
    except KeyboardInterrupt:
        pass
