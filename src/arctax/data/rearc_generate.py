"""Generating re-arc examples, task by task, from the user's checkout of re-arc.

re-arc (github.com/michaelhodel/re-arc, MIT; never bundled here) has one generator per ARC-AGI-1
training task, ``generators.generate_<id>(diff_lb, diff_ub) -> {"input": grid, "output": grid}``,
and one verifier, ``verifiers.verify_<id>(grid) -> grid``. Its ``main.generate_dataset`` keeps a
generated example when both grids are valid, the verifier maps the input to the output, the
output differs from the input (not degenerate) and the input is new (unique), until the task has
N examples. It seeds Python's global ``random`` once for all 400 tasks, so a task's examples
depend on every task generated before it. Here each task is generated alone, with ``random``
seeded from ``(seed, task id)``: a task's examples do not depend on which other tasks are
generated nor on how tasks are cut into jobs, and a finished task is kept and never redone.

Layout of a generation (:func:`generate_shard`, then :func:`gather`): every task's examples and
statistics in the state folder, the shards' :class:`~arctax.lifecycle.JobState`
(``tasks/<id>.json``, ``stats/<id>.json``: a task's record), gathered into a folder
in re-arc's own layout, ``tasks/<id>.json`` (a JSON list of ``{"input", "output"}``) and
``metadata.json`` (per-task statistics), plus ``generation.json`` (settings, checkout, totals).
Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from arctax.io import atomic_write_text, file_sha256, read_json, write_json
from arctax.lifecycle import JobState, fingerprint, stop_line
from arctax.settings import Rearc

CLONE = "git clone https://github.com/michaelhodel/re-arc && git -C re-arc checkout e5b7f1d"
PINNED_COMMIT = "e5b7f1d"  # the re-arc commit arctax was checked against (docs/DATA.md)
CODE_FILES = ("generators.py", "verifiers.py", "dsl.py", "utils.py")
_MODULES = ("dsl", "utils", "generators", "verifiers")
_GEN = re.compile(r"^def generate_([0-9a-f]{8})\(", re.M)
_VER = re.compile(r"^def verify_([0-9a-f]{8})\(", re.M)
Grid = tuple[tuple[int, ...], ...]


class RearcError(ValueError):
    """The re-arc checkout or the generation settings are unusable; the message says the fix."""


def _checkout(repo: str | Path) -> Path:
    path = Path(repo).expanduser()
    missing = [f for f in ("generators.py", "verifiers.py") if not (path / f).is_file()]
    if missing:
        raise RearcError(
            f"data.rearc.repo: '{repo}' is not a checkout of re-arc (no {', '.join(missing)}); "
            f"clone it: {CLONE}"
        )
    return path.resolve()


def task_ids(repo: str | Path, only: Sequence[str] | None = None) -> list[str]:
    """The task ids that have both a generator and a verifier in the checkout, sorted; ``only``
    restricts them (``data.rearc.tasks``; an id without both is an error naming it). Reads the
    two files as text: fast enough for the workflow to plan its jobs at start-up."""
    path = _checkout(repo)
    gens = set(_GEN.findall((path / "generators.py").read_text()))
    vers = set(_VER.findall((path / "verifiers.py").read_text()))
    ids = sorted(gens & vers)
    if only is not None:
        unknown = sorted(set(only) - set(ids))
        if unknown:
            raise RearcError(
                f"data.rearc.tasks: {', '.join(unknown[:5])} have no generator and verifier "
                f"in {path} (it has {len(ids)} tasks)"
            )
        ids = sorted(set(only))
    if not ids:
        raise RearcError(f"data.rearc.repo: no generate_<id>/verify_<id> pairs in {path}")
    return ids


def _git(path: Path, *args: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        res = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10, check=False
        )
        if res.returncode == 0:
            return res.stdout.strip()
    return None


def checkout_version(repo: str | Path) -> dict[str, Any]:
    """The checkout's git commit (``None`` unless the checkout is itself a git work tree; with
    ``-dirty`` when its code files differ from it) and the sha256 of its code files."""
    path = _checkout(repo)
    h = hashlib.sha256()
    for name in CODE_FILES:
        f = path / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes())
    commit = None
    top = _git(path, "rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == path:  # not the repository some folder sits in
        commit = _git(path, "rev-parse", "HEAD")
        if commit and _git(path, "status", "--porcelain", "--", *CODE_FILES):
            commit += "-dirty"
    return {"repo": str(path), "commit": commit, "code_sha256": h.hexdigest()}


def version_label(version: Mapping[str, Any]) -> str:
    """``re-arc@<commit>`` (or ``re-arc:<code sha>`` outside git), for manifests and the audit."""
    commit = version.get("commit")
    if commit:
        return f"re-arc@{commit[:7]}" + ("-dirty" if commit.endswith("-dirty") else "")
    return f"re-arc:code-{version['code_sha256'][:12]}"


def load_checkout(repo: str | Path) -> tuple[dict[str, Callable], dict[str, Callable], Any]:
    """Import the checkout's generators and verifiers (and ``utils``, whose ``rng`` list records
    each example's random draws, re-arc's RNG difficulty, when it has one).

    The checkout's top-level modules (``dsl``, ``utils``, ...) are imported under their own
    names; modules of those names imported before are set aside and put back afterwards.
    """
    path = _checkout(repo)
    os.environ.setdefault("MPLBACKEND", "Agg")  # re-arc's utils imports matplotlib.pyplot
    saved = {m: sys.modules.pop(m) for m in _MODULES if m in sys.modules}
    sys.path.insert(0, str(path))
    try:
        gens_mod = __import__("generators")
        vers_mod = __import__("verifiers")
        utils_mod = sys.modules.get("utils")
    except Exception as e:
        raise RearcError(f"data.rearc.repo: importing re-arc from {path} failed: {e!r}") from e
    finally:
        sys.path.remove(str(path))
        for m in _MODULES:
            sys.modules.pop(m, None)
        sys.modules.update(saved)
    if utils_mod is not None and not str(getattr(utils_mod, "__file__", "")).startswith(str(path)):
        utils_mod = None
    gens = _prefixed(gens_mod, "generate_")
    vers = _prefixed(vers_mod, "verify_")
    return gens, vers, utils_mod


def _prefixed(module: ModuleType, prefix: str) -> dict[str, Callable]:
    return {n[len(prefix) :]: getattr(module, n) for n in dir(module) if n.startswith(prefix)}


def task_seed(seed: int, task_id: str) -> int:
    """The seed of one task's ``random`` stream: the same whatever else is generated."""
    return int.from_bytes(hashlib.sha256(f"re-arc:{seed}:{task_id}".encode()).digest()[:8], "big")


class _CallTimeout(BaseException):
    """A generator or verifier call ran past ``call_timeout_s`` (BaseException: user code's
    ``except Exception`` cannot swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`_CallTimeout` in this thread after ``seconds`` (main thread only)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise _CallTimeout

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def as_grid(g: Any) -> Grid | None:
    """``g`` as a tuple of tuples when it is an ARC grid (1..30 x 1..30, colours 0..9), else None."""
    if not isinstance(g, (tuple, list)) or not 0 < len(g) <= 30:
        return None
    rows = []
    for r in g:
        if not isinstance(r, (tuple, list)) or not 0 < len(r) <= 30:
            return None
        if not all(type(v) is int and 0 <= v <= 9 for v in r):
            return None
        rows.append(tuple(r))
    if len({len(r) for r in rows}) != 1:
        return None
    return tuple(rows)


OUTCOMES = ("kept", "error", "invalid", "unverified", "degenerate", "duplicate")


def generate_task(
    task_id: str,
    generator: Callable,
    verifier: Callable,
    s: Rearc,
    rng_source: Any = None,
) -> tuple[list[dict[str, list]], dict[str, Any]]:
    """Up to ``s.n_examples`` verified, non-degenerate examples with unique inputs (``s``: the
    generation's settings, :meth:`arctax.settings.Data.rearc_generation`), and the task's
    statistics (every generator call counted under one of :data:`OUTCOMES`).

    Stops short when ``s.max_attempts`` calls did not give enough (``stopped: attempts``) or one
    call ran past ``s.call_timeout_s`` (``stopped: timeout``; a wall-clock limit, so that case
    alone can depend on the machine).
    """
    random.seed(task_seed(s.seed, task_id))
    seen: set[Grid] = set()
    examples: list[dict[str, list]] = []
    counts = dict.fromkeys(OUTCOMES, 0)
    difficulty: list[float] = []
    first_error = None
    stopped = None
    t0 = time.perf_counter()
    attempts = 0
    while len(examples) < s.n_examples:
        if attempts >= s.max_attempts:
            stopped = "attempts"
            break
        attempts += 1
        if rng_source is not None:
            rng_source.rng = []
        try:
            with _time_limit(s.call_timeout_s):
                ex = generator(s.diff_lb, s.diff_ub)
                grids = (as_grid(ex.get("input")), as_grid(ex.get("output")))
                ok = None not in grids and _verified(verifier, grids)
        except _CallTimeout:
            stopped = "timeout"
            break
        except Exception as e:  # a generator's own failure: counted, as re-arc does
            counts["error"] += 1
            first_error = first_error or f"{type(e).__name__}: {e}"[:300]
            continue
        if None in grids:
            counts["invalid"] += 1
        elif not ok:
            counts["unverified"] += 1
        elif grids[0] == grids[1]:
            counts["degenerate"] += 1
        elif grids[0] in seen:
            counts["duplicate"] += 1
        else:
            seen.add(grids[0])
            counts["kept"] += 1
            examples.append(
                {"input": [list(r) for r in grids[0]], "output": [list(r) for r in grids[1]]}
            )
            draws = getattr(rng_source, "rng", None) if rng_source is not None else None
            if draws:
                difficulty.append(sum(draws) / len(draws))
    seconds = time.perf_counter() - t0
    generated = attempts - counts["error"] - counts["invalid"] - (stopped == "timeout")
    verified = counts["kept"] + counts["degenerate"] + counts["duplicate"]
    stats = {
        "task_id": task_id,
        "task_seed": task_seed(s.seed, task_id),
        "n_examples": len(examples),
        "requested": s.n_examples,
        "complete": len(examples) == s.n_examples,
        "stopped": stopped,
        "attempts": attempts,
        **counts,
        "verified_share": verified / generated if generated else None,
        "seconds": round(seconds, 4),
        "examples_per_s": len(examples) / seconds if seconds else None,
        "rng_difficulty_mean": sum(difficulty) / len(difficulty) if difficulty else None,
        "first_error": first_error,
    }
    return examples, stats


def _verified(verifier: Callable, grids: tuple[Grid | None, Grid | None]) -> bool:
    if None in grids:
        return False
    try:
        return as_grid(verifier(grids[0])) == grids[1]
    except _CallTimeout:
        raise
    except Exception:
        return False


def shard_fingerprint(s: Rearc, version: Mapping[str, Any]) -> str:
    """What a saved task must match to be reused: what its examples depend on (not the call
    timeout: it changes no example; a task it stopped is made again on every run) and the
    checkout's code."""
    return fingerprint({"settings": s.examples(), "code": version["code_sha256"]})


def shard_params(ids: Sequence[str], s: Rearc, code_sha256: str) -> str:
    """What a shard's output depends on (the workflow's generate_rearc params, a JSON string):
    its tasks, what their examples depend on and the checkout's code (not its path: a moved
    checkout regenerates nothing)."""
    return json.dumps({"tasks": list(ids), "settings": list(s.examples().values()),
                       "code": code_sha256})  # fmt: skip


def n_shards(n_tasks: int, tasks_per_job: int) -> int:
    """Jobs that ``n_tasks`` tasks make at ``tasks_per_job`` each."""
    return max(1, math.ceil(n_tasks / tasks_per_job))


def shard_ids(ids: Sequence[str], shard: int, n: int) -> list[str]:
    """The contiguous block of (sorted) task ids that shard ``shard`` of ``n`` generates."""
    per = math.ceil(len(ids) / n)
    return list(ids)[shard * per : (shard + 1) * per]


def _saved(job: JobState, task_id: str) -> dict[str, Any] | None:
    """The saved statistics of a task generated with the job's fingerprint (its file intact)."""
    stats, task_file = job.record(f"stats/{task_id}"), job.folder / "tasks" / f"{task_id}.json"
    if stats is None or not task_file.is_file():
        return None
    if stats.get("file_sha256") != file_sha256(task_file):
        return None
    if stats.get("stopped") == "timeout":  # a wall-clock stop: try again
        return None
    return stats


def generate_shard(
    repo: str | Path,
    ids: Sequence[str],
    s: Rearc,
    state_dir: str | Path,
    record_path: str | Path,
    log: Callable[[str], None] = print,
    shard: str = "0-of-1",
    margin_s: float = 0.0,
) -> dict[str, Any]:
    """Generate the tasks ``ids`` into ``state_dir`` (resuming every task saved before with the
    same settings and code) and write the shard's record to ``record_path``.

    On a stop signal or ``margin_s`` before its Slurm time limit the shard stops between two
    tasks and exits 75 (every task made so far is kept: a retry goes on)."""
    version = checkout_version(repo)
    job = JobState(state_dir, shard_fingerprint(s, version), margin_s,
                   job=f"re-arc shard {shard}", owner=f"shard-{shard}.owner")  # fmt: skip
    return job.run(  # one writer per shard: a copy waits, then adopts the record
        lambda: _generate(repo, ids, s, job, record_path, log, shard, version),
        f"shard-{shard}.done", [record_path], adopt=lambda _: read_json(record_path),
    )  # fmt: skip


def _generate(
    repo: str | Path,
    ids: Sequence[str],
    s: Rearc,
    job: JobState,
    record_path: str | Path,
    log: Callable[[str], None],
    shard: str,
    version: dict[str, Any],
) -> dict[str, Any]:
    """:func:`generate_shard`'s work, by the shard's one writer."""
    job.unmark_done(f"shard-{shard}.done")  # running again: done only once written again
    gens = vers = rng_source = None
    stats_all, resumed = [], []
    t0 = time.perf_counter()
    with job:
        for i, tid in enumerate(ids):
            if job.stop():
                saved = f"{i} of {len(ids)} tasks kept; run again to go on"
                job.stopped(stop_line(f"re-arc shard {shard}", job.stop(), saved))
            stats = _saved(job, tid)
            if stats is not None:
                resumed.append(tid)
            else:
                if gens is None:
                    gens, vers, rng_source = load_checkout(repo)
                if tid not in gens or tid not in vers:
                    raise RearcError(
                        f"re-arc task {tid}: no generate_{tid} / verify_{tid} in {repo}"
                    )
                examples, stats = generate_task(tid, gens[tid], vers[tid], s, rng_source)
                task_file = job.folder / "tasks" / f"{tid}.json"
                atomic_write_text(task_file, json.dumps(examples, separators=(",", ":")) + "\n")
                stats = job.save(f"stats/{tid}", {**stats, "file_sha256": file_sha256(task_file)})
            stats_all.append(stats)
            log(
                f"[{i + 1}/{len(ids)}] {tid}: {stats['n_examples']}/{stats['requested']} "
                f"examples, {stats['attempts']} calls, {stats['seconds']:.2f} s"
                + (" (resumed)" if tid in resumed else "")
                + (f" STOPPED ({stats['stopped']})" if stats["stopped"] else "")
            )
    record = {
        "tasks": list(ids),
        "resumed": resumed,
        "settings": {**s.examples(), "call_timeout_s": s.call_timeout_s},
        "checkout": version,
        "fingerprint": job.fp,
        "seconds": round(time.perf_counter() - t0, 3),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "stats": {st["task_id"]: _public(st) for st in stats_all},
    }
    write_json(record_path, record)
    job.mark_done(f"shard-{shard}.done", {"finished": time.time()}, [record_path])
    return record


def _public(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k not in ("fingerprint", "file_sha256")}


def gather(
    records: Sequence[str | Path], state_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Build ``out_dir`` in re-arc's layout from the shards' records: ``tasks/<id>.json``
    (hard links to the state's files, copies across file systems), ``metadata.json`` (per-task
    statistics) and ``generation.json`` (settings, checkout, totals, tasks stopped short)."""
    import shutil

    state, out = Path(state_dir), Path(out_dir)
    recs = [json.loads(Path(r).read_text()) for r in records]
    fps = {r["fingerprint"] for r in recs}
    if len(fps) != 1:
        raise RearcError(
            f"re-arc shards {', '.join(map(str, records))} were generated with different "
            "settings or code; run the generation again (snakemake re-runs the stale shards)"
        )
    stats = {tid: st for r in recs for tid, st in r["stats"].items()}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "tasks").mkdir(parents=True)
    for tid in sorted(stats):
        src, dst = state / "tasks" / f"{tid}.json", tmp / "tasks" / f"{tid}.json"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    write_json(tmp / "metadata.json", {t: stats[t] for t in sorted(stats)})
    summary = generation_summary(stats)
    generation = {
        "generator": "arctax generate_rearc (re-arc's generators and verifiers, per-task seeds)",
        "checkout": recs[0]["checkout"],
        "version": version_label(recs[0]["checkout"]),
        "settings": recs[0]["settings"],
        **summary,
    }
    write_json(tmp / "generation.json", generation)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return generation


def generation_summary(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Totals over tasks: examples, calls, verified share, speed, and tasks stopped short."""
    vals = list(stats.values())
    calls = sum(s["attempts"] for s in vals)
    generated = sum(
        s["attempts"] - s["error"] - s["invalid"] - (s["stopped"] == "timeout") for s in vals
    )
    verified = sum(s["kept"] + s["degenerate"] + s["duplicate"] for s in vals)
    seconds = sum(s["seconds"] for s in vals)
    return {
        "n_tasks": len(vals),
        "n_examples": sum(s["n_examples"] for s in vals),
        "calls": calls,
        "outcomes": {k: sum(s[k] for s in vals) for k in OUTCOMES},
        "verified_share": verified / generated if generated else None,
        "generation_seconds": round(seconds, 3),
        "tasks_per_s": len(vals) / seconds if seconds else None,
        "short_tasks": {
            s["task_id"]: f"{s['n_examples']}/{s['requested']} ({s['stopped']})"
            for s in vals
            if not s["complete"]
        },
    }
