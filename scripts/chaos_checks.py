"""The checks of scripts/chaos.py and its report (docs/results/CHAOS.md), apart from the runs
so that tests/scripts/test_chaos_checks.py can hold each of them to a constructed case.

- :func:`compare_trees`: the injected run's results against the undisturbed run's;
- :func:`partial_files`: temp files and results that do not read whole;
- :func:`status_violations`: what ``arctax status`` said against what Slurm and the disk said;
- :func:`overlaps`, :func:`orphan_fates`: jobs that ran twice at once, work done again, and
  what became of a killed driver's jobs;
- :func:`report`: the Markdown.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = [
    "scancel_term", "scancel_kill", "kill_pgrp", "restart_slurmd", "restart_slurmctld",
    "kill_driver", "drain_node", "disk_full",
]  # fmt: skip
# Keys and columns that hold a duration, a clock time, a host, a path or a job id: they differ
# between any two runs; everything else must be equal.
VOLATILE = re.compile(
    r"(seconds|_s$|_per_s$|^created$|^time|_time$|^started|^finished|^host|hostname|"
    r"slurm_job_id|^pid$|resumed_from|^attempt|^resumed$|duration|elapsed|^when$|memory|"
    r"^git_commit$)",  # the checkout's commit: a reused baseline may predate a commit
    re.IGNORECASE,
)
TEMP_NAME = re.compile(r"(\.tmp$|\.tmp\.|^\.nfs|\.partial$|\.stale-|\.finished-)")


@dataclass
class Poll:
    t0: float
    t1: float
    rc: int
    error: str = ""
    rows: dict[str, str] = field(default_factory=dict)  # label -> state
    slurm: dict[str, str] = field(default_factory=dict)  # label -> slurm id it shows
    exists_before: dict[str, bool] = field(default_factory=dict)
    exists_after: dict[str, bool] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)  # job ids squeue listed live after the poll


# ----------------------------------------------------------------------------- the checks


def complete(path: Path) -> bool:
    """Whether a result file reads whole: JSON parses, CSV rows are full, npz arrays load,
    a checkpoint loads (weights_only), nothing is empty."""
    try:
        if path.stat().st_size == 0:
            return False
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            rows = list(csv.reader(path.open()))
            return all(len(r) == len(rows[0]) for r in rows)
        elif path.suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as z:
                for k in z.files:
                    z[k]
        elif path.suffix == ".ckpt":
            import torch

            torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def partial_files(out: Path) -> list[str]:
    """Every temp file and every result that does not read whole, anywhere under ``out``
    (outputs and resumable state alike)."""
    bad = []
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(out).as_posix()
        if TEMP_NAME.search(p.name):
            bad.append(f"{rel} (temp file)")
        elif p.suffix in (".json", ".csv", ".npz", ".ckpt") and not complete(p):
            bad.append(f"{rel} (does not read whole)")
    return bad


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not VOLATILE.search(str(k))}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"
    return obj


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return [
            {k: v for k, v in r.items() if not VOLATILE.search(k or "")} for r in csv.DictReader(f)
        ]


def _ckpt_diff(a: Path, b: Path) -> list[str]:
    import torch

    x = torch.load(a, map_location="cpu", weights_only=True)
    y = torch.load(b, map_location="cpu", weights_only=True)
    out: list[str] = []

    def walk(p: Any, q: Any, where: str) -> None:
        if isinstance(p, dict) and isinstance(q, dict):
            for k in sorted(set(p) | set(q), key=str):
                if k not in p or k not in q:
                    out.append(f"{where}/{k} only in one")
                else:
                    walk(p[k], q[k], f"{where}/{k}")
        elif isinstance(p, (list, tuple)) and isinstance(q, (list, tuple)) and len(p) == len(q):
            for i, (u, v) in enumerate(zip(p, q, strict=True)):
                walk(u, v, f"{where}[{i}]")
        elif isinstance(p, torch.Tensor) and isinstance(q, torch.Tensor):
            if p.shape != q.shape or p.dtype != q.dtype or not torch.equal(p, q):
                out.append(f"{where} (tensor)")
        elif p != q:
            out.append(f"{where}: {str(p)[:60]} != {str(q)[:60]}")

    walk(x, y, "")
    return out


SKIP_COMPARE = ("logs/", "benchmarks/", ".state/")  # logs and timings; the state is scratch


def compare_trees(base: Path, run: Path) -> dict[str, Any]:
    """Every result file of the undisturbed run against the injected run's.

    Bit for bit where the bytes agree. Otherwise by kind: JSON and CSV equal once keys and
    columns that hold durations, clock times, hosts or job ids are left out (``VOLATILE``);
    a checkpoint equal tensor for tensor and value for value; a Markdown table equal once its
    numbers in timing columns are masked (it is written from the JSON next to it). Anything
    else that differs is a difference.
    """
    identical, equal_but_timing, different, missing, extra = [], {}, {}, [], []
    names = {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}
    got = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    names = {n for n in names if not n.startswith(SKIP_COMPARE)}
    got = {n for n in got if not n.startswith(SKIP_COMPARE)}
    missing, extra = sorted(names - got), sorted(got - names)
    for name in sorted(names & got):
        a, b = base / name, run / name
        if a.read_bytes() == b.read_bytes():
            identical.append(name)
            continue
        why: list[str] = []
        try:
            if a.suffix == ".json":
                ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
                if _strip(ja) != _strip(jb):
                    why = [f"{k}" for k in _diff_keys(_strip(ja), _strip(jb))][:8]
            elif a.suffix == ".csv":
                if _csv_rows(a) != _csv_rows(b):
                    why = ["a value outside the timing columns"]
            elif a.suffix == ".ckpt":
                why = [d for d in _ckpt_diff(a, b) if not VOLATILE.search(d.rsplit("/", 1)[-1])]
            elif a.suffix == ".md":
                if _mask_md(a.read_text()) != _mask_md(b.read_text()):
                    why = ["text outside the timing columns"]
            else:
                why = ["bytes"]
        except Exception as e:
            why = [f"unreadable: {e}"]
        if why:
            different[name] = why
        else:
            equal_but_timing[name] = "timings / clock times only"
    return {
        "identical": identical, "equal_but_timing": equal_but_timing, "different": different,
        "missing": missing, "extra": extra,
    }  # fmt: skip


def _diff_keys(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                out += _diff_keys(a.get(k), b.get(k), f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (u, v) in enumerate(zip(a, b, strict=True))
            for d in _diff_keys(u, v, f"{where}[{i}]")
        ]
    return [where or "."]


def _mask_md(text: str) -> str:
    """A Markdown table's timing cells and sha256 prefixes masked (summary.md's last column is
    seconds per task; the checkpoint's sha256 covers its recorded folder)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = line.split("|")
            if len(cells) > 3 and re.fullmatch(r"\s*[\d.]+\s*", cells[-2]):
                cells[-2] = " t "
            line = "|".join(cells)
        lines.append(re.sub(r"\d+(\.\d+)? ?s\b", "Ts", line))
    return "\n".join(lines)


def status_violations(polls: list[Poll], keys: dict[str, tuple[str, str]],
                      subs: dict[str, tuple[str, str]], jobs: dict[str, dict]) -> list[str]:  # fmt: skip
    """What `arctax status` got wrong, against what Slurm and the disk say.

    - a crash: exit status not 0, or no JSON;
    - a dead job called running: the row says running, but every Slurm job of it (the study's
      submissions of that rule and wildcards) had ended 2 s before the poll began (sacct) and
      squeue, asked right after the poll, listed none of them running or pending, or none
      was ever submitted and its outputs all existed before and after the poll... (a job run
      outside Slurm is never called running by the table unless its files move);
    - a finished job called unfinished: its outputs all existed before and after the poll,
      its last Slurm job before the poll had COMPLETED 2 s before the poll began, and no
      other job of it was queued or ran during the poll; the row must say done.
    """
    by_key: dict[tuple[str, str], list[str]] = {}
    for j, key in subs.items():
        by_key.setdefault(key, []).append(j)
    bad = []
    for n, poll in enumerate(polls):
        if poll.rc != 0 or poll.error:
            bad.append(f"poll {n}: crashed (exit {poll.rc}): {poll.error}")
            continue
        for label, state in poll.rows.items():
            ids = by_key.get(keys.get(label, ("", "")), [])
            spans = [jobs.get(j, {}) for j in ids]
            alive = [s for s in spans if (s.get("submit") or 0) <= poll.t1 + 1 and (
                s.get("end") is None or s["end"] >= poll.t0 - 2)]  # fmt: skip
            if state == "running" and ids and not alive and not set(ids) & poll.listed:
                bad.append(f"poll {n} ({poll.t0:.0f}): {label} called running; its Slurm jobs "
                           f"{', '.join(ids)} had all ended")  # fmt: skip
            before = [s for s in spans if (s.get("submit") or 0) <= poll.t0]
            last = max(before, key=lambda s: s.get("submit") or 0) if before else None
            finished = (
                last is not None and last.get("state") == "COMPLETED"
                and last.get("end") is not None and last["end"] < poll.t0 - 2
                and not alive and poll.exists_before.get(label) and poll.exists_after.get(label)
            )  # fmt: skip
            if finished and state != "done":
                bad.append(f"poll {n} ({poll.t0:.0f}): {label} called {state!r}; it had finished")
    return bad


def orphan_fates(orphans: list[str], subs: dict[str, tuple[str, str]], jobs: dict[str, dict],
                 t0: float) -> list[str]:  # fmt: skip
    """What became of each job its killed driver left queued or running, and of the copies
    of it the next driver submitted (times from the injected run's start)."""
    out = []
    for j in orphans:
        rule, wc = subs.get(j, ("?", ""))
        me = jobs.get(j, {})
        others = sorted(
            (k for k, v in subs.items() if v == (rule, wc) and int(k) > int(j)), key=int
        )
        fate = [f"{rule} {wc}: orphan {j} {me.get('state', '?')} "
                f"({_rel(me.get('start'), t0)}-{_rel(me.get('end'), t0)})"]  # fmt: skip
        for k in others:
            o = jobs.get(k, {})
            together = (o.get("start") and me.get("start") and o["start"] < (me.get("end") or 1e18)
                        and me["start"] < (o.get("end") or 1e18))  # fmt: skip
            when = (
                "ran at the same time"
                if together
                else (
                    "ran after it had completed"
                    if me.get("state") == "COMPLETED"
                    else "ran after it"
                )
            )
            fate.append(f"copy {k} {o.get('state', '?')} ({_rel(o.get('start'), t0)}-"
                        f"{_rel(o.get('end'), t0)}) {when}")  # fmt: skip
        out.append("; ".join(fate))
    return out


def _rel(t: float | None, t0: float) -> str:
    return "?" if t is None else f"{t - t0:.0f}s"


def slurm_messages(slurm_logs: Path) -> list[str]:
    """What Slurm itself said to the study's jobs (``srun`` / ``slurmstepd`` lines of the
    executor's logs: cancellations, step creation retried), one line per job and message."""
    out = []
    for log in sorted(slurm_logs.rglob("*.log"), key=lambda p: (*p.parent.parts[-2:], p.stem)):
        for line in log.read_text(errors="replace").splitlines():
            if (
                line.startswith(("srun:", "slurmstepd"))
                and ("error" in line or "retrying" in line or "CANCELLED" in line)
                and "lacks support for cpu binding" not in line
            ):
                out.append(f"{log.parent.parent.name.removeprefix('rule_')} "
                           f"{log.parent.name} job {log.stem}: {line.strip()}")  # fmt: skip
    return out


def owner_events(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Every one-writer job's ownership events (``.state/**/*.owner.log``, one JSON line per
    event of any copy: owns, waits, adopts, takes over, releases), by events file."""
    found: dict[str, list[dict[str, Any]]] = {}
    for f in sorted((out / ".state").rglob("*.owner.log")) if (out / ".state").is_dir() else []:
        rows = []
        for line in f.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        found[f.relative_to(out).as_posix()] = sorted(rows, key=lambda r: r.get("t", 0))
    return found


def writers_at_once(events: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Two copies of one job writing at once: a copy began to own it while the previous
    owner had neither released it nor been taken over from (proved dead)."""
    bad = []
    for name, rows in events.items():
        owner: dict[str, Any] | None = None
        for r in rows:
            who = r.get("slurm_job_id") or f"pid {r.get('pid')}"
            if r["event"] == "owns":
                if owner is not None:
                    bad.append(f"{name}: {who} owned it while {owner['who']} still did")
                owner = {"who": who, "pid": r.get("pid")}
            elif r["event"] == "releases" and owner is not None and owner["pid"] == r.get("pid"):
                owner = None
            elif r["event"] == "takes over":
                owner = None  # the previous owner proved dead
    return bad


def working_jobs(events: dict[str, list[dict[str, Any]]]) -> tuple[set[str], set[str]]:
    """(Slurm jobs that did a one-writer job's work, Slurm jobs that adopted another copy's)."""
    worked, adopted = set(), set()
    for rows in events.values():
        for r in rows:
            job = r.get("slurm_job_id")
            if job and r["event"] == "owns":
                worked.add(job)
            if job and r["event"] == "adopts":
                adopted.add(job)
    return worked - adopted, adopted


def overlaps(
    subs: dict[str, tuple[str, str]],
    jobs: dict[str, dict],
    one_writer: set[str] | None = None,
    worked: set[str] | None = None,
) -> dict[str, Any]:
    """Jobs of the same rule and wildcards that ran at the same time, and finished work done
    again (a job completed, then another of it ran). For the rules in ``one_writer`` (their
    jobs take an owner: arctax.lifecycle.JobState) only the Slurm jobs in ``worked`` (that
    owned the job and did not adopt another copy's result) count: a copy that waited for the
    owner and adopted its outputs neither ran at once nor did the work again."""
    one_writer, worked = one_writer or set(), worked or set()

    def counts(rule: str, j: str) -> bool:
        return rule not in one_writer or j in worked

    by_key: dict[tuple[str, str], list[str]] = {}
    for j, key in subs.items():
        by_key.setdefault(key, []).append(j)
    twice, redone = [], []
    for (rule, wc), ids in sorted(by_key.items()):
        spans = sorted((jobs[j] | {"id": j} for j in ids
                        if j in jobs and jobs[j].get("start") and counts(rule, j)),
                       key=lambda s: s["start"])  # fmt: skip
        for i, a in enumerate(spans):
            for b in spans[i + 1 :]:
                end_a = a.get("end") or time.time()
                if b["start"] < end_a:
                    twice.append(f"{rule} {wc}: jobs {a['id']} ({a['state']}) and {b['id']} "
                                 f"({b['state']}) ran together for {end_a - b['start']:.0f}s")  # fmt: skip
        done = [s for s in spans if s["state"] == "COMPLETED"]
        if len(done) > 1:
            redone.append(f"{rule} {wc}: completed {len(done)} times (jobs "
                          f"{', '.join(s['id'] for s in done)})")  # fmt: skip
    return {"ran_twice_at_once": twice, "completed_more_than_once": redone}


# ----------------------------------------------------------------------------- the report


def report(res: dict[str, Any]) -> str:
    f = res["faults"]
    c = res["compare"]
    lines = [
        "# Chaos: a study on a cluster that misbehaves",
        "",
        f"Generated by `scripts/chaos.py` (`make chaos`) on {res['date']}; {res['machine']}.",
        f"Seed **{res['seed']}** (`python scripts/chaos.py --seed {res['seed']} --scale "
        f"{res['scale']}` repeats the plan; the cluster's own timing does not repeat).",
        "",
        f"The study: config/demo.yaml + the chaos overlay ({res['scale']} scale): "
        f"{res['base']['slurm_jobs']} Slurm jobs undisturbed. The command, as in the README: "
        f"`{' '.join(['snakemake', *res['command'][1:]])}`.",
        "",
        "## Verdict",
        "",
        "| check | result |",
        "|---|---|",
    ]
    for name, ok, detail in res["checks"]:
        lines.append(f"| {name} | {'**pass**' if ok else '**FAIL**'}: {detail} |")
    lines += [
        "",
        "## Faults injected",
        "",
        "| # | kind | planned (s) | injected (s) | target | what happened |",
        "|---|---|---|---|---|---|",
    ]
    for i, x in enumerate(f):
        done = "" if x["done_s"] is None else f"{x['done_s']}"
        lines.append(f"| {i} | {x['kind']} | {x['at_s']} | {done} | {x['target']} | {x['note']} |")
    counts = {k: sum(1 for x in f if x["kind"] == k and x["done_s"] is not None) for k in KINDS}
    lines += [
        "",
        "By kind (injected): "
        + ", ".join(f"{k} {counts[k]}" for k in KINDS if k in res["kinds"])
        + "."
        + "".join(f" Not injected: {k} ({why})." for k, why in res.get("not_injected", {}).items()),
        "",
        "## Cost",
        "",
        "| | undisturbed | injected |",
        "|---|---|---|",
        f"| wall time (s) | {res['base']['wall_s']} | {res['wall_s']} (+{res['wall_s'] - res['base']['wall_s']:.0f}) |",
        f"| Slurm jobs submitted | {res['base']['slurm_jobs']} | {res['slurm_jobs']} "
        f"({res['slurm_jobs'] - res['base']['slurm_jobs']} retried or resubmitted) |",
        f"| driver runs | 1 | {len(res['drivers'])} ({res['restarts']} after an error, "
        f"{sum('killed' in d['why'] for d in res['drivers'])} killed) |",
        f"| `arctax status` polls | | {res['polls']} |",
        "",
        "## Outputs against the undisturbed run",
        "",
        f"- bit for bit identical: {len(c['identical'])} files (checkpoints, predictions, "
        "submissions, per-task tables, prepared data, plots among them)",
        f"- equal once timings are left out: {len(c['equal_but_timing'])} files: "
        + (", ".join(f"`{n}`" for n in sorted(c["equal_but_timing"])) or "none"),
        f"- different: {len(c['different'])}"
        + "".join(f"\n  - `{n}`: {', '.join(w)}" for n, w in sorted(c["different"].items())),
        f"- missing: {', '.join(c['missing']) or 'none'}; extra: {', '.join(c['extra']) or 'none'}",
        "",
        "Timings are the keys and columns named for a duration, a clock time, a host or a job id "
        f"(`{VOLATILE.pattern}`); a training resumed after a fault also records `resumed_from`.",
        "",
        "## What went on along the way",
        "",
        "A training, an adaptation shard, a re-arc shard and an evaluation take an owner "
        "(`arctax.lifecycle.JobState.claim`): a second copy waits for a live owner and adopts "
        "what it finished; the next driver adopts a dead driver's finished jobs "
        "(`arctax.orphans`). The other jobs (data preparation, smoke tests, comparisons, "
        "gathers: seconds to minutes) are run again when their driver died.",
        "",
    ]
    o = res["overlaps"]
    lines += [
        f"- two copies of a one-writer job writing at once: {len(o.get('writers_at_once', []))}"
    ]
    lines += [f"  - {x}" for x in o.get("writers_at_once", [])]
    lines += [f"- Slurm jobs that ran at the same time as another copy and did its work: "
              f"{len(o['ran_twice_at_once'])}"]  # fmt: skip
    lines += [f"  - {x}" for x in o["ran_twice_at_once"]]
    lines += [f"- finished work done again: {len(o['completed_more_than_once'])}"]
    lines += [f"  - {x}" for x in o["completed_more_than_once"]]
    lines += [f"- copies that waited for their job's owner and adopted its result: "
              f"{len(o.get('adopted_by_a_waiting_copy', []))} (Slurm jobs "
              f"{', '.join(o.get('adopted_by_a_waiting_copy', [])) or 'none'})"]  # fmt: skip
    lines += [f"- jobs adopted by the next driver (finished after their driver died): "
              f"{len(o.get('adopted_by_the_driver', []))}"]  # fmt: skip
    lines += [f"  - {x}" for x in o.get("adopted_by_the_driver", [])]
    lines += [
        "- the killed driver's jobs (orphans) and the copies the next driver submitted (a "
        "copy among those that adopted did no work of its own): "
        f"{len(o['orphans'])}"
    ]
    lines += [f"  - {x}" for x in o["orphans"]]
    lines += [f"- Slurm's own messages to the jobs: {len(res['slurm_messages'])}"]
    lines += [f"  - {x}" for x in res["slurm_messages"]]
    lines += [
        f"- partial files: {', '.join(res['partial']) or 'none'}",
        f"- status violations: {len(res['status_violations'])}",
    ]
    lines += [f"  - {x}" for x in res["status_violations"][:20]]
    lines += ["", "Driver runs:", ""]
    for d in res["drivers"]:
        lines.append(f"- {d['n']}: exit {d['rc']}, {d['end'] - d['start']:.0f}s"
                     + (f" ({d['why'].strip()})" if d["why"] else ""))  # fmt: skip
    return "\n".join(lines) + "\n"
