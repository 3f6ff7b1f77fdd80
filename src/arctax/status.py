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

The expected jobs come from the config (models, seeds, test sets, adaptation, sweep); jobs
found on disk that the config does not name (another seed, re-arc shards) are listed too.
torch-free: this module imports only the config layer.
"""

from __future__ import annotations

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

from arctax.config import model_names
from arctax.lifecycle import STOPPED_EXIT
from arctax.lifecycle.driver import DriverLock, driver_locks, held, unlock_command
from arctax.settings import Adapt, Sweep, Trainer, Trial69

NOT_STARTED = "not started"
QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
STOPPED = "stopped-will-resume"  # exit 75 (or an interrupted Snakemake): a rerun resumes it
INTERRUPTED = "interrupted"  # started, then Snakemake stopped: rerun-incomplete runs it again
STALLED = "stalled?"  # no Snakemake record, no end line, no output for a long while
STATES = [RUNNING, QUEUED, STOPPED, INTERRUPTED, STALLED, FAILED, NOT_STARTED, DONE]

ATTEMPT_HEADER = re.compile(r"^=== attempt started (\S+) on (\S+).*, Slurm job (\S+) ===")
# the stop lines of a training, an adaptation shard and a sweep worker (arctax.lifecycle)
STOP_LINE = re.compile(
    r"(?:training stopped|shard \d+ stopped|worker stopped(?: between trials)?) \((.*?)\)[:;]"
)
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Killed)\b.*")
SLURM_END = re.compile(
    r".*(CANCELLED AT .*|DUE TO TIME LIMIT.*|DUE TO PREEMPTION.*|oom[-_ ]kill.*|"
    r"Out Of Memory.*|NODE FAIL.*)",
    re.IGNORECASE,
)


@dataclass
class Job:
    """One job of the study: the Snakemake rule, its wildcard values and the files it writes."""

    rule: str
    label: str
    wildcards: list[str]
    outputs: list[Path]
    log: Path
    state: Path | None = None  # resumable state folder (trainings)
    history: Path | None = None  # every attempt's output (trainings, sweep workers)


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


def _train_job(out: Path, model: str, seed: int) -> Job:
    d = out / "train" / model / f"seed{seed}"
    state = out / ".state" / "train" / model / f"seed{seed}"
    return Job(
        "train",
        f"train {model} seed{seed}",
        [model, str(seed)],
        [d / f for f in ("best.ckpt", "last.ckpt", "metrics.csv", "provenance.json")],
        out / "logs" / "train" / model / f"seed{seed}.log",
        state,
        state.with_name(f"{state.name}.attempts.log"),
    )


def expected_jobs(cfg: Mapping[str, Any], out: Path) -> list[Job]:
    """The jobs the config's study runs (``snakemake all``; the sweep when it has begun)."""
    from arctax.data.testsets import named_sets

    jobs: list[Job] = []
    data, logs = out / "data", out / "logs"
    jobs.append(
        Job(
            "prepare_data",
            "prepare data",
            [],
            [data / f for f in ("train.npz", "val.npz", "manifest.json")],
            logs / "prepare_data.log",
        )
    )
    try:
        test_sets = list(named_sets(cfg))
    except ValueError:
        test_sets = []
    for t in test_sets:
        d = data / "test" / t
        jobs.append(
            Job(
                "prepare_test",
                f"prepare test {t}",
                [t],
                [d / "test.npz", d / "manifest.json"],
                logs / "prepare_test" / f"{t}.log",
            )
        )
    models = model_names(cfg)  # a model set to null is dropped, as the workflow does
    for m in models:
        jobs.append(
            Job("smoke_test", f"smoke {m}", [m], [out / "smoke" / f"{m}.json"],
                logs / "smoke_test" / f"{m}.log")
        )  # fmt: skip
    seeds = list(cfg["seeds"])
    jobs += [_train_job(out, m, s) for m in models for s in seeds]
    if cfg["champion"]["bootstrap"]:
        state = out / ".state" / "bootstrap"
        jobs.append(
            Job("bootstrap_champion", "bootstrap champion", [],
                [out / "bootstrap" / "champion_bootstrap.ckpt", out / "bootstrap" / "provenance.json"],
                logs / "bootstrap_champion.log", state, state.with_name("bootstrap.attempts.log"))
        )  # fmt: skip
    ref = "champion_bootstrap"
    for t in test_sets:
        for m in models:
            for s in seeds:
                d = out / "eval" / t / m / f"seed{s}"
                jobs.append(
                    Job("evaluate", f"evaluate {t} {m} seed{s}", [t, m, str(s)],
                        [d / "summary.json"], logs / "eval" / t / m / f"seed{s}.log")
                )  # fmt: skip
        jobs.append(
            Job("evaluate_reference", f"evaluate {t} {ref}", [t],
                [out / "eval" / t / ref / "summary.json"], logs / "eval" / t / f"{ref}.log")
        )  # fmt: skip
    for t in test_sets:
        jobs.append(
            Job("compare", f"compare {t}", [t], [out / "compare" / t / "summary.md"],
                logs / "compare" / f"{t}.log")
        )  # fmt: skip
    jobs += _adapt_jobs(cfg, out, models, seeds, test_sets, ref)
    sweep = Sweep.of(cfg)
    if (out / "sweep").is_dir() or (logs / "sweep").is_dir():
        for m in sweep.models:
            for w in range(sweep.workers):
                jobs.append(_sweep_job(out, m, w))
    return jobs


def _sweep_job(out: Path, model: str, worker: int) -> Job:
    state = out / ".state" / "sweep" / model
    return Job("sweep_worker", f"sweep {model} worker{worker}", [model, str(worker)],
               [out / "sweep" / model / "workers" / f"{worker}.json"],
               out / "logs" / "sweep" / model / f"worker{worker}.log", None,
               state / f"worker{worker}.attempts.log")  # fmt: skip


def _adapt_job(out: Path, label: str, tag: str, shard: int, n: int) -> Job:
    name = f"{shard}-of-{n}"
    return Job("adapt", f"adapt {label}/{tag} {name}", [label, tag, str(shard), str(n)],
               [out / "adapt" / label / tag / "shards" / f"{name}.json"],
               out / "logs" / "adapt" / label / tag / f"{name}.log")  # fmt: skip


def _adapt_jobs(cfg, out, models, seeds, test_sets, ref) -> list[Job]:
    """Adaptation shards: their count comes from the prepared test set (as in the workflow)."""
    acfg = Adapt.of(cfg)
    if not acfg.enabled or not test_sets:
        return []
    from arctax.adaptation.shards import n_shards

    runs = [(m, f"seed{s}") for m in acfg.models if m in models for s in seeds]
    champ = cfg["champion"]
    if acfg.reference and not champ["predictions"] and not champ["adapter"]:
        runs.append((ref, "reference"))
    test_set = acfg.test_set or test_sets[0]
    manifest = out / "data" / "test" / test_set / "manifest.json"
    try:
        n = n_shards(len(json.loads(manifest.read_text())["splits"]["test"]), acfg)
    except (OSError, ValueError, KeyError, TypeError):
        n = None  # not planned yet: the test set is not prepared
    jobs = []
    for label, tag in runs:
        if n is None:
            jobs.append(Job("adapt", f"adapt {label}/{tag} (unplanned)",
                            [label, tag], [out / "adapt" / label / tag / "summary.json"],
                            out / "logs" / "adapt" / label / tag / "gather.log"))  # fmt: skip
        else:
            jobs += [_adapt_job(out, label, tag, i, n) for i in range(n)]
    return jobs


_FOUND = [  # (rule, log path under logs/, job maker): jobs on disk the config may not name
    ("train", re.compile(r"train/([^/]+)/seed(\d+)\.log"),
     lambda out, m: _train_job(out, m[1], int(m[2]))),
    ("generate_rearc", re.compile(r"generate_rearc/(\d+)-of-(\d+)\.log"),
     lambda out, m: Job("generate_rearc", f"re-arc shard {m[1]}-of-{m[2]}", [m[1], m[2]],
                        [out / "rearc" / "shards" / f"{m[1]}-of-{m[2]}.json"],
                        out / "logs" / "generate_rearc" / f"{m[1]}-of-{m[2]}.log")),
    ("adapt", re.compile(r"adapt/([^/]+)/([^/]+)/(\d+)-of-(\d+)\.log"),
     lambda out, m: _adapt_job(out, m[1], m[2], int(m[3]), int(m[4]))),
    ("sweep_worker", re.compile(r"sweep/([^/]+)/worker(\d+)\.log"),
     lambda out, m: _sweep_job(out, m[1], int(m[2]))),
]  # fmt: skip


def study_jobs(cfg: Mapping[str, Any], out: Path) -> list[Job]:
    """The config's jobs, then any job found in ``out/logs`` that the config does not name."""
    jobs = expected_jobs(cfg, out)
    known = {j.log for j in jobs}
    logs = out / "logs"
    found = sorted(p for p in logs.rglob("*.log") if p.is_file()) if logs.is_dir() else []
    for p in found:
        rel = p.relative_to(logs).as_posix()
        for _rule, rx, make in _FOUND:
            m = rx.fullmatch(rel)
            if m and p not in known:
                jobs.append(make(out, m))
                known.add(p)
    # re-arc shards whose outputs exist but whose logs were removed
    return jobs


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

    def slurm_logs(self, job: Job) -> list[Path]:
        """The Slurm executor's log of each submission of ``job``, oldest first."""
        wc = "_".join(job.wildcards).replace("/", "_")
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
    if job.state is not None:  # a training: progress from the state's (or output's) metrics
        metrics = job.state / "metrics.csv"
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
        if job.state is not None and rows and prog["done"] < max_epochs:
            row.progress += " (early stop)"
        row.exit = "finished" if row.attempts else ""
        return row
    activity = _mtime(job.log, job.history, job.state / "metrics.csv" if job.state else None)
    if marker is not None:  # Snakemake started it and has not seen it end
        sq = squeue.get(row.slurm, "")
        if not sm.running and sq.startswith(("RUNNING", "COMPLETING", "PENDING", "CONFIGURING")):
            # an orphan: its driver is gone, the Slurm job goes on by itself
            row.state = RUNNING if sq.startswith(("RUNNING", "COMPLETING")) else QUEUED
            row.exit = f"{sq}; its Snakemake is gone (rerun your command)"
        elif not sm.running and all(p.exists() for p in job.outputs):
            row.state, row.left_s = DONE, None  # finished after its driver died
            row.exit = "finished without its Snakemake (a rerun redoes it: rerun-incomplete)"
        elif not sm.running:
            row.state = STOPPED if job.state is not None else INTERRUPTED
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
        row.left_s = None if job.state is None else row.left_s
        return row  # not started
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
    cfg: Mapping[str, Any],
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
    jobs = study_jobs(cfg, out)
    t69 = Trial69.of(cfg)
    max_epochs = int(Trainer.of(cfg).max_epochs or t69.max_epochs)
    markers = [sm.marker(j) for j in jobs]
    ids = [str((m or {}).get("external_jobid") or "") for m in markers]
    sq = squeue_states(ids) if use_squeue and any(ids) else None
    rows = [job_row(j, sm, max_epochs, sq, now) for j in jobs]
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
