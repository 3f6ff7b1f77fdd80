"""The paper's ablation ladder, as its code ran it and corrected, on task families whose answers
are known; docs/results/LADDER.md.

Usage::

    python experiments/bench_ladder.py              # the reduced run (make bench-ladder)
    python experiments/bench_ladder.py --epochs 100 # the full budget (Trial 69's max_epochs)
    python experiments/bench_ladder.py --quick      # seconds: tiny sizes, one seed (the tests)

Two ladders of five rungs (decoder_only, encoder_decoder, grid2d, perminv, champion):
``config/ladder_as_run.yaml`` (Exp 0 / 1 / 2 with the original's initialisation, embedding
scale, dropout, PermInv table and flat-index Grid2D positions; the decoder-only scored over its
whole sequence) and ``config/ladder.yaml`` (the same rungs with real (row, col) positions; the
decoder-only on its output), at the demo sizes. A rung both ladders build alike (Exp 0, the
champion) is trained once per seed and appears in both. Each rung is trained by
``arctax.training.train.train`` on generated rules (``arctax.data.families``: gravity, a 2-D
rule the test input tells, and colour_map, a per-task colour mapping only the demonstrations
tell, by default) for every seed, and scored by ``arctax.evaluation.evaluate`` on fresh tasks:
the greedy generated answer (exact), and the teacher-forced grid accuracy as the paper's code
measured it and as ours does. Per rung and row: the mean over seeds with a two-level 95%
interval (tasks, then seeds within them); each adjacent step of both ladders and each rung of
one ladder against the same rung of the other, as paired differences with the smallest
difference the test set can detect and Holm's correction across every comparison of the report.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import itertools
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_adapt_science import TINY  # --quick: the same tiny sizes

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arctax.config import DEFAULT_CONFIG, REPO_ROOT
from arctax.data import families
from arctax.io import atomic_write_text
from arctax.settings import Settings, load_settings

RUNGS = ("decoder_only", "encoder_decoder", "grid2d", "perminv", "champion")
LADDERS = {"as_run": REPO_ROOT / "config" / "ladder_as_run.yaml",
           "corrected": REPO_ROOT / "config" / "ladder.yaml"}  # fmt: skip
TITLE = {"as_run": "as the paper's code ran it", "corrected": "corrected (real (row, col))"}
EXP = {"decoder_only": "Exp -1", "encoder_decoder": "Exp 0", "grid2d": "Exp 1 (+Grid2D)",
       "perminv": "Exp 2 (+PermInv)", "champion": "Exp 3 (+context)"}  # fmt: skip
# seconds per epoch at 400 tasks per rule, one torch thread (ADAPTATION.md): longest first
EPOCH_SECONDS = {"decoder_only": 13.0, "champion": 8.4}
# Trained: the three rules a test input tells (flip, gravity, swap) and colour_map, a per-task
# colour mapping only the demonstrations tell (each test task draws a mapping of its own).
TRAINED = (*families.TRAINED, *families.NEW_RULE)
# per-example measurements compared: column -> label
METRICS = {"grid_correct": "generated, exact",
           "paper_grid_correct": "teacher-forced grid, as the paper's code measured it",
           "tf_grid_correct": "teacher-forced grid, ours"}  # fmt: skip


def groups(rules: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The test rows: each trained rule, then the dihedral conjugates of the trained ones."""
    conj = tuple(f for f in families.VIEW_REACHABLE if f.split("_")[0] in rules)
    return {**{f: (f,) for f in rules}, **({"view_reachable": conj} if conj else {})}


def generate(
    root: Path, per_family: int, per_group: int, rules: tuple[str, ...] = TRAINED, hi: int = 5
) -> dict[str, int]:
    """Training tasks (seed 1) and test tasks (seed 2) on grids of 3..``hi`` a side."""
    return families.write_families(root, dict.fromkeys(rules, per_family), groups(rules),
                                   per_group, seed=1, hi=hi)  # fmt: skip


def config(work: Path, ladder: str, epochs: int, quick: bool) -> dict[str, Any]:
    """The shipped config, demo sizes, the ladder's overlay, pointed at the generated tasks."""
    over: dict[str, Any] = {
        "run": "bench-ladder",
        "data": {"source": str(work / "tasks" / "train"), "test_source": str(work / "tasks" / "test"),
                 "max_tasks": None, "max_cells": None, "val_fraction": 0.1, "augment": {"copies": 0}},
        "taxonomy": {"labels": str(work / "tasks" / "labels.json")},
        "trainer": {"max_epochs": epochs, "num_workers": 0, "accelerator": "cpu"},
        "eval": {"max_new_tokens": 40, "attempts": 1, "views": 1, "bootstrap_samples": 10000},
    }  # fmt: skip
    if quick:  # tiny sizes under the ladder's own options
        over["eval"]["bootstrap_samples"] = 200
        files = [DEFAULT_CONFIG, REPO_ROOT / "config" / "demo.yaml", LADDERS[ladder]]
        raw = copy.deepcopy(dict(load_settings(*files, overrides=over).raw))
        for name, block in TINY.items():
            raw["models"][name].update(block)
        return Settings.of(raw)
    files = [DEFAULT_CONFIG, REPO_ROOT / "config" / "demo.yaml", LADDERS[ladder]]
    return load_settings(*files, overrides=over)


def trainings(cfgs: dict[str, Settings]) -> dict[tuple[str, str], str]:
    """``(ladder, rung) -> training key``: rungs both ladders build alike share one key (and
    one training per seed)."""
    keys, out = {}, {}
    for ladder, cfg in cfgs.items():
        for rung in RUNGS:
            m = cfg.models[rung]
            spec = json.dumps([rung, m.cls, m.config()], sort_keys=True)
            out[(ladder, rung)] = keys.setdefault(spec, f"{ladder}-{rung}")
    return out


def job(args: tuple[Settings, str, int, str, str, int]) -> dict[str, Any]:
    """Train one rung for one seed and score it on the test tasks (in a worker process)."""
    cfg, model, seed, data_dir, out_dir, threads = args
    import torch

    from arctax.evaluation.evaluate import evaluate
    from arctax.training.train import train

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out = Path(out_dir)
    train(cfg, model, seed, data_dir, out / "train", out / ".state")
    t1 = time.perf_counter()
    epochs = int(pd.read_csv(out / "train" / "metrics.csv")["epoch"].max()) + 1
    table = evaluate(cfg, out / "train" / "best.ckpt", data_dir, out / "eval", model, seed)
    return {"out": out_dir, "seed": seed, "epochs": epochs, "train_s": round(t1 - t0, 1),
            "eval_s": round(time.perf_counter() - t1, 1), "rows": table.to_dict("records")}  # fmt: skip


def parameter_counts(cfgs: dict[str, Settings]) -> dict[str, dict[str, int]]:
    """Each ladder's rungs' parameter counts, built from the config as the workflow builds it."""
    from arctax.models import build_model, count_parameters

    return {
        ladder: {m: count_parameters(build_model(m, c.models[m].config(), c.models[m].cls))
                 for m in RUNGS}
        for ladder, c in cfgs.items()
    }  # fmt: skip


def _sums(frame: pd.DataFrame, col: str, ids: pd.Index):
    from arctax.evaluation.stats import seed_sums

    return seed_sums(frame, col, ids)


def _comparisons(rows: list[str]) -> list[tuple[str, str, str, str]]:
    """``(a, b, kind, row)``: each adjacent step of each ladder (upper minus lower), then each
    middle rung as run minus corrected, on every row; the teacher-forced measurements on the
    ``all`` row only."""
    out = []
    for ladder in LADDERS:
        for lo, hi in itertools.pairwise(RUNGS):
            out += [(f"{ladder}:{hi}", f"{ladder}:{lo}", "step", r) for r in rows]
    for rung in ("decoder_only", "grid2d", "perminv"):
        out += [(f"as_run:{rung}", f"corrected:{rung}", "as run - corrected", r) for r in rows]
    return out


def table(per_query: pd.DataFrame, n_boot: int) -> dict[str, list[dict[str, Any]]]:
    """Per ladder rung and row: each metric's mean over seeds (two-level 95% CI); the paired
    comparisons of :func:`_comparisons` with p-values, Holm-corrected across all of them."""
    from arctax.evaluation.stats import holm, paired_two_level, two_level_ci

    boot = (n_boot, 0.95, 0)
    cats = sorted(set(per_query["category"]))
    rows = [*[c for c in (*TRAINED, "view_reachable") if c in cats],
            *sorted(set(cats) - set(TRAINED) - {"view_reachable"}), "all"]  # fmt: skip
    sel = {r: per_query if r == "all" else per_query[per_query["category"] == r] for r in rows}
    ids = {r: pd.Index(sorted(f["task_id"].unique())) for r, f in sel.items()}
    acc = []
    for r in rows:
        for model, frame in sel[r].groupby("model", sort=False):
            entry: dict[str, Any] = {"row": r, "model": model}
            for col in METRICS:
                est = two_level_ci(*_sums(frame, col, ids[r]), *boot)
                entry[col] = {"mean": est.mean, "lo": est.lo, "hi": est.hi, "n": est.n}
            acc.append(entry)
    pairs = []
    for a, b, kind, r in _comparisons(rows):
        fa, fb = (sel[r][sel[r]["model"] == m] for m in (a, b))
        for col in METRICS if r == "all" else ("grid_correct",):
            num_a, den = _sums(fa, col, ids[r])
            d = paired_two_level(num_a, _sums(fb, col, ids[r])[0], den, *boot)
            pairs.append({"a": a, "b": b, "kind": kind, "row": r, "metric": col, "diff": d.diff,
                          "lo": d.lo, "hi": d.hi, "mdd": d.mdd, "p": d.p, "n": d.n})  # fmt: skip
    for p, adj in zip(pairs, holm([p["p"] for p in pairs]), strict=True):
        p["p_holm"] = float(adj)
    return {"acc": acc, "pairs": pairs}


def _pct(v: float) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f}%"


def _ci(c: dict[str, Any]) -> str:
    return f"{_pct(c['mean'])} ({_pct(c['lo'])}, {_pct(c['hi'])})"


def _p(v: float) -> str:
    return "n/a" if v != v else f"{v:.2g}"


def _pair(p: dict[str, Any]) -> str:
    star = "**" if p["p_holm"] < 0.05 else ""
    return (f"{star}{100 * p['diff']:+.1f} ({100 * p['lo']:+.1f}, {100 * p['hi']:+.1f}){star}; "
            f"{_mdd(p['mdd'])}; p={_p(p['p'])}, Holm {_p(p['p_holm'])}")  # fmt: skip


def _mdd(v: float) -> str:
    return f"±{100 * v:.1f}" if v > 0 else "no spread"


def report(res: dict[str, Any], counts: dict[str, dict[str, int]], meta: dict[str, Any]) -> str:
    """docs/results/LADDER.md (the first part, to "What it says")."""
    acc = {(a["row"], a["model"]): a for a in res["acc"]}
    rows = list(dict.fromkeys(a["row"] for a in res["acc"]))
    pairs = res["pairs"]
    seeds = meta["seeds"]
    lines = [
        "# The ablation ladder, as the paper's code ran it and corrected, on task families with "
        "known answers",
        "",
        '_`make bench-ladder` rewrites this file with its own run (the first part, to "What it '
        'says"); the sections after it were written by hand from the tables above them '
        "(`--render` rewrites the tables from `results/bench-ladder/ladder.json`)._",
        "",
        f"Written by `{meta['command']}` (`make bench-ladder`), {meta['date']}, wall time "
        f"**{meta['elapsed_s'] / 60:.1f} min**, {meta['jobs']} worker processes (one torch thread "
        f"each); {meta['machine']}; load average (1 min) at start / end {meta['load']}.",
        "",
        f"Data: {meta['per_family']} training tasks per trained rule "
        f"({', '.join(meta['rules'])}; gravity, flip, swap: the test input tells the rule; "
        "colour_map: a per-task mapping of 3 colours only the demonstrations tell; 3 "
        "demonstrations + 1 test pair each, every pair a training query), random "
        f"3x3..{meta['max_side']}x{meta['max_side']} grids (arctax.data.families); "
        f"{meta['per_group']} fresh test tasks per row (another seed; view_reachable: the "
        "trained rules' dihedral conjugates, never trained). Models: the rungs of "
        "`config/ladder_as_run.yaml` (**as run**: Exp 0 / 1 / 2 with the original's Xavier "
        "initialisation, embedding x sqrt(d_model), dropout 0.167, its PermInv table with its "
        "own Kaiming a=sqrt(5) init, and flat-index Grid2D positions, bug 3; the decoder-only "
        "trained and scored over its whole [input] SEP [output] sequence) and `config/ladder.yaml` "
        "(**corrected**: the same with real (row, col) positions and the decoder-only on its "
        "output) at the demo sizes; a rung both build alike (Exp 0, the champion) is trained once "
        f"per seed. Trial 69 recipe with at most **{meta['epochs']} epochs** (its early stopping "
        f"on val_loss), seeds {', '.join(map(str, seeds))}, no augmented copies. Scores: the "
        "task's greedy generated answer is exact (one attempt, no voting, no adaptation); "
        "teacher-forced grid accuracy as the paper's code measured it (output cells, the first "
        "one given) and ours (markers and first cell too). One test query per task, so per "
        f"example = per task. Intervals: {meta['n_boot']} two-level bootstrap resamples (tasks, "
        "then seeds within each task), 95%; each number is the mean over the seeds.",
        "",
        "| rung | model | parameters (vs champion) | trained in | epochs (per seed) | train s "
        "(mean) |",
        "|---|---|---|---|---|---|",
    ]
    for ladder in LADDERS:
        champ = counts[ladder]["champion"]
        for m in RUNGS:
            t = meta["trained"][f"{ladder}:{m}"]
            ratio = counts[ladder][m] / champ - 1
            flag = " **not size-matched**" if abs(ratio) > 0.05 else ""
            lines.append(f"| {EXP[m]}, {ladder.replace('_', ' ')} | {m} | {counts[ladder][m]:,} "
                         f"({ratio:+.1%}){flag} | {t['key']} | "
                         f"{' / '.join(map(str, t['epochs']))} | {t['train_s']:.0f} |")  # fmt: skip
    for ladder in LADDERS:
        lines += ["", f"### The ladder {TITLE[ladder]}: tasks solved (generated answer exact; "
                  "mean over seeds, 95% interval)", "",
                  "| row | " + " | ".join(f"{EXP[m]} {m}" for m in RUNGS) + " |",
                  "|---|" + "---|" * len(RUNGS)]  # fmt: skip
        for r in rows:
            cells = [acc[(r, f"{ladder}:{m}")] for m in RUNGS]
            n = cells[0]["grid_correct"]["n"]
            lines.append(f"| {r} (n={n}) | "
                         + " | ".join(_ci(c["grid_correct"]) for c in cells) + " |")  # fmt: skip
        lines += ["", f"Teacher-forced, all rows, the ladder {TITLE[ladder]}:", "",
                  "| measurement | " + " | ".join(m for m in RUNGS) + " |",
                  "|---|" + "---|" * len(RUNGS)]  # fmt: skip
        for col in ("paper_grid_correct", "tf_grid_correct"):
            lines.append(f"| {METRICS[col]} | " + " | ".join(
                _ci(acc[("all", f"{ladder}:{m}")][col]) for m in RUNGS) + " |")  # fmt: skip
    m = len(pairs)
    lines += [
        "",
        f"### Paired differences (Holm's correction across all {m} comparisons of this report)",
        "",
        "Each cell: the difference in points, a - b (95% interval); the smallest difference this "
        "test set detects with 80% power; p (two-sided, recentred bootstrap; its floor is "
        f"1 / ({meta['n_boot']} + 1)) and Holm's adjusted p. **Bold**: Holm p < 0.05. Generated "
        "answers on every row; the teacher-forced measurements on all rows together.",
    ]
    for ladder in LADDERS:
        steps = [(f"{ladder}:{hi}", f"{ladder}:{lo}") for lo, hi in itertools.pairwise(RUNGS)]
        lines += ["", f"Each step up the ladder {TITLE[ladder]}:", "",
                  "| row, measurement | " + " | ".join(f"{b.split(':')[1]} -> {a.split(':')[1]}"
                                                       for a, b in steps) + " |",
                  "|---|" + "---|" * len(steps)]  # fmt: skip
        lines += _pair_rows(pairs, steps, rows)
    cross = [(f"as_run:{r}", f"corrected:{r}") for r in ("decoder_only", "grid2d", "perminv")]
    lines += ["", "Each rung as run minus the same rung corrected (does the ladder survive its "
              "bug fixes?):", "",
              "| row, measurement | " + " | ".join(a.split(":")[1] for a, _ in cross) + " |",
              "|---|" + "---|" * len(cross)]  # fmt: skip
    lines += _pair_rows(pairs, cross, rows)
    lines += ["", meta.get("notes", ""), ""]
    return "\n".join(lines)


def _pair_rows(pairs: list[dict[str, Any]], cols: list[tuple[str, str]], rows: list[str]):
    by = {(p["a"], p["b"], p["row"], p["metric"]): p for p in pairs}
    out = []
    for r in rows:
        for col in METRICS if r == "all" else ("grid_correct",):
            cells = [by[(a, b, r, col)] for a, b in cols]
            label = f"{r}, {METRICS[col]}" if r == "all" else r
            out.append(f"| {label} | " + " | ".join(_pair(c) for c in cells) + " |")
    return out


def run(argv: list[str] | None = None) -> str:
    """Run the benchmark and write its report; return the report text."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny sizes)")
    ap.add_argument("--epochs", type=int, default=30, help="max epochs (Trial 69: 100)")
    ap.add_argument("--per-family", type=int, default=300, help="training tasks per rule")
    ap.add_argument("--per-group", type=int, default=40, help="test tasks per row")
    ap.add_argument(
        "--rules", default="gravity,colour_map", help="trained rules, of " + ", ".join(TRAINED)
    )
    ap.add_argument("--max-side", type=int, default=4, help="largest grid side (3..5)")
    ap.add_argument("--seeds", default=None, help="training seeds, e.g. 307,308 (the ladder's)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results" / "LADDER.md")
    ap.add_argument("--work", type=Path, default=REPO_ROOT / "results" / "bench-ladder")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--notes", default="", help="a paragraph appended to the report")
    ap.add_argument(
        "--render", action="store_true", help="rewrite the report from WORK/ladder.json"
    )
    args = ap.parse_args(argv)
    if args.render:
        blob = json.loads((args.work / "ladder.json").read_text())
        meta = {**blob["meta"], "notes": args.notes or blob["meta"].get("notes", "")}
        text = report(blob["results"], blob["counts"], meta)
        atomic_write_text(args.out, text)
        return text
    if args.quick:
        args.epochs, args.per_family, args.per_group = 1, 8, 2
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    work = args.work
    rules = tuple(args.rules.split(","))
    unknown = set(rules) - set(TRAINED)
    if unknown:
        ap.error(f"--rules: {sorted(unknown)} not among {', '.join(TRAINED)}")
    generate(work / "tasks", args.per_family, args.per_group, rules, args.max_side)
    cfgs = {ladder: config(work, ladder, args.epochs, args.quick) for ladder in LADDERS}
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(cfgs["corrected"].seeds)
    if args.quick and not args.seeds:
        seeds = seeds[:1]
    from arctax.data.prepare import prepare

    data_dir = work / "data"
    prepare(
        cfgs["corrected"].data, cfgs["corrected"].taxonomy, data_dir
    )  # the data blocks of both ladders are the same
    counts = parameter_counts(cfgs)
    keys = trainings(cfgs)
    threads = 1 if args.jobs > 1 else max(1, os.cpu_count() or 1)
    todo = {}  # one job per (training key, seed)
    for (ladder, rung), key in keys.items():
        for s in seeds:
            todo.setdefault((key, s), (cfgs[ladder], rung, s, str(data_dir),
                                       str(work / key / f"seed{s}"), threads))  # fmt: skip
    order = sorted(todo, key=lambda k: -EPOCH_SECONDS.get(k[0].split("-")[1], 4.3))
    jobs = [todo[k] for k in order]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            done = list(pool.map(job, jobs))
    else:
        done = [job(j) for j in jobs]
    results = dict(zip(order, done, strict=True))
    frames, trained = [], {}
    for (ladder, rung), key in keys.items():
        runs = [results[(key, s)] for s in seeds]
        label = f"{ladder}:{rung}"
        for d in runs:
            frames.append(pd.DataFrame(d["rows"]).assign(model=label))
        trained[label] = {"key": key, "epochs": [d["epochs"] for d in runs],
                          "train_s": float(np.mean([d["train_s"] for d in runs]))}  # fmt: skip
    per_query = pd.concat(frames, ignore_index=True)
    n_boot = int(cfgs["corrected"].eval.bootstrap_samples)
    res = table(per_query, n_boot)
    meta = {
        "command": "python experiments/bench_ladder.py"
        + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": round(time.perf_counter() - t0),
        "load": f"{load0:.2f} / {os.getloadavg()[0]:.2f}",
        "jobs": args.jobs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {__import__('torch').__version__}",
        "per_family": args.per_family,
        "per_group": args.per_group,
        "rules": list(rules),
        "max_side": args.max_side,
        "epochs": args.epochs,
        "seeds": seeds,
        "n_boot": n_boot,
        "trained": trained,
        "notes": args.notes,
    }
    text = report(res, counts, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    blob = {"results": res, "counts": counts, "meta": meta}
    atomic_write_text(work / "ladder.json", json.dumps(blob, default=str))
    per_query.to_csv(work / "per_query.csv", index=False)
    return text


if __name__ == "__main__":
    print(run())
