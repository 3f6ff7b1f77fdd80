"""The paper's ablation ladder on task families whose answers are known; docs/results/LADDER.md.

Usage::

    python experiments/bench_ladder.py              # the reduced run (make bench-ladder)
    python experiments/bench_ladder.py --epochs 100 # the full budget (Trial 69's max_epochs)
    python experiments/bench_ladder.py --quick      # seconds: tiny sizes (the test suite)

The five rungs of ``config/ladder.yaml`` (decoder_only, encoder_decoder, grid2d, perminv,
champion), at the demo sizes (``config/config.yaml`` + ``config/demo.yaml`` +
``config/ladder.yaml``), are trained by ``arctax.training.train.train`` on four rules
(``arctax.data.families``: flip, gravity and swap, which the test input tells, and colour_map, a
per-task colour mapping only the demonstrations tell) and scored by
``arctax.evaluation.evaluate`` (greedy generated answers, one attempt) on fresh tasks: per
trained rule (does "+Grid2D" help a 2-D rule like gravity? does the context encoder help the
rule only the demonstrations tell, on mappings it never saw?) and on the trained rules'
dihedral conjugates (never trained; no view voting here). Per rung and condition: the task
accuracy with a 95% bootstrap interval over tasks, and the paired difference to the rung
below with its interval and exact McNemar test. One training seed (the ladder's first).
"""

from __future__ import annotations

import argparse
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

import pandas as pd
from bench_adapt_science import TINY  # --quick: the same tiny sizes

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arctax.config import DEFAULT_CONFIG, REPO_ROOT, load_config, model_config
from arctax.data import families
from arctax.io import atomic_write_text

RUNGS = ("decoder_only", "encoder_decoder", "grid2d", "perminv", "champion")
# --controls: one change at a time where the paper's rungs change two. grid2d_unscaled is Exp 0
# plus Grid2D (and dropout 0.167) without the x sqrt(d_model) embedding scale Exp 1 / 2 ran with
CONTROLS = {"grid2d_unscaled": {"class": "arctax.models.encoder_decoder:EncoderDecoder",
                                "extends": "grid2d", "embed_scale": False}}  # fmt: skip
COMPARE = {"grid2d_unscaled": ("encoder_decoder", "grid2d", "perminv")}
EXP = {"decoder_only": "Exp -1", "encoder_decoder": "Exp 0", "grid2d": "Exp 1 (+Grid2D)",
       "perminv": "Exp 2 (+PermInv)", "champion": "Exp 3 (+context)"}  # fmt: skip
# seconds per epoch at 400 tasks per rule, one torch thread (ADAPTATION.md): longest first
EPOCH_SECONDS = {"decoder_only": 13.0, "champion": 8.4}
# Trained: the three rules a test input tells (flip, gravity, swap) and colour_map, a per-task
# colour mapping only the demonstrations tell (each test task draws a mapping of its own).
TRAINED = (*families.TRAINED, *families.NEW_RULE)
# the rows of the table: each trained rule alone, then the dihedral conjugates (never trained)
GROUPS = {**{f: (f,) for f in TRAINED}, "view_reachable": families.VIEW_REACHABLE}


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


def config(work: Path, epochs: int, quick: bool, controls: bool = False) -> dict[str, Any]:
    """The shipped config, demo sizes, the ladder overlay, pointed at the generated tasks."""
    over: dict[str, Any] = {
        "run": "bench-ladder",
        "data": {"source": str(work / "tasks" / "train"), "test_source": str(work / "tasks" / "test"),
                 "max_tasks": None, "max_cells": None, "val_fraction": 0.1, "augment": {"copies": 0}},
        "taxonomy": {"labels": str(work / "tasks" / "labels.json")},
        "trainer": {"max_epochs": epochs, "num_workers": 0, "accelerator": "cpu"},
        "eval": {"max_new_tokens": 40, "attempts": 1, "views": 1, "bootstrap_samples": 10000},
    }  # fmt: skip
    if quick:
        over["models"] = dict(TINY)
        over["eval"]["bootstrap_samples"] = 200
    if controls:
        over["models"] = {**over.get("models", {}), **CONTROLS}
    files = [
        DEFAULT_CONFIG,
        REPO_ROOT / "config" / "demo.yaml",
        REPO_ROOT / "config" / "ladder.yaml",
    ]
    return load_config(*files, overrides=over)


def job(args: tuple[dict[str, Any], str, str, str, int]) -> dict[str, Any]:
    """Train one rung and score it on the test tasks (in a worker process: one torch thread)."""
    cfg, model, data_dir, out_dir, threads = args
    import torch

    from arctax.evaluation.evaluate import evaluate
    from arctax.training.train import train

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    seed = int(cfg["seeds"][0])
    out = Path(out_dir)
    res = train(cfg, model, seed, data_dir, out / "train", out / ".state")
    t1 = time.perf_counter()
    epochs = int(pd.read_csv(out / "train" / "metrics.csv")["epoch"].max()) + 1
    table = evaluate(cfg, out / "train" / "best.ckpt", data_dir, out / "eval", model, seed)
    return {"model": model, "epochs": epochs, "devices": res.get("devices_used"), "train_s": round(t1 - t0, 1),
            "eval_s": round(time.perf_counter() - t1, 1), "rows": table.to_dict("records")}  # fmt: skip


def parameter_counts(cfg: dict[str, Any], models: tuple[str, ...] = RUNGS) -> dict[str, int]:
    """Each rung's parameter count, built from the config as the workflow builds it."""
    from arctax.config import model_class
    from arctax.models import build_model, count_parameters

    return {
        m: count_parameters(build_model(m, model_config(cfg, m), model_class(cfg, m)))
        for m in models
    }


def table(per_query: pd.DataFrame, n_boot: int) -> list[dict[str, Any]]:
    """Per rung and group: accuracy over tasks (95% CI) and the paired step from the rung below."""
    from arctax.evaluation.stats import bootstrap_ci, mcnemar, paired_bootstrap, task_table

    tasks = task_table(per_query.assign(seed=0))
    rows = []
    for group in (*GROUPS, *sorted(set(tasks["category"]) - set(GROUPS)), "all"):
        sel = tasks if group == "all" else tasks[tasks["category"] == group]
        if sel.empty:
            continue
        wide = sel.pivot(index="task_id", columns="model", values="grid_correct").astype(float)
        for i, m in enumerate(RUNGS):
            est = bootstrap_ci(wide[m].to_numpy(), n_boot, 0.95, 0)
            row = {"group": group, "model": m, "n": est.n, "acc": est.mean, "lo": est.lo,
                   "hi": est.hi}  # fmt: skip
            if i:
                below = RUNGS[i - 1]
                d = paired_bootstrap(wide[m].to_numpy(), wide[below].to_numpy(), n_boot, 0.95, 0)
                b, c, p = mcnemar(wide[m].to_numpy() > 0, wide[below].to_numpy() > 0)
                row.update(step=d.mean, step_lo=d.lo, step_hi=d.hi, b=b, c=c, p=p)
            rows.append(row)
        for m in (c for c in COMPARE if c in wide):
            est = bootstrap_ci(wide[m].to_numpy(), n_boot, 0.95, 0)
            row = {"group": group, "model": m, "control": True, "n": est.n, "acc": est.mean,
                   "lo": est.lo, "hi": est.hi, "vs": {}}  # fmt: skip
            for other in COMPARE[m]:
                d = paired_bootstrap(wide[m].to_numpy(), wide[other].to_numpy(), n_boot, 0.95, 0)
                b, c, p = mcnemar(wide[m].to_numpy() > 0, wide[other].to_numpy() > 0)
                row["vs"][other] = {"step": d.mean, "step_lo": d.lo, "step_hi": d.hi, "b": b,
                                    "c": c, "p": p}  # fmt: skip
            rows.append(row)
    return rows


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def report(rows: list[dict[str, Any]], counts: dict[str, int], meta: dict[str, Any]) -> str:
    """docs/results/LADDER.md."""
    champ = counts["champion"]
    lines = [
        "# The ablation ladder on task families with known answers",
        "",
        f"Written by `{meta['command']}` (`make bench-ladder`), {meta['date']}, wall time "
        f"**{meta['elapsed_s'] / 60:.1f} min**, {meta['jobs']} worker processes (one torch thread "
        f"each); {meta['machine']}; load average (1 min) at start / end {meta['load']}.",
        "",
        f"Data: {meta['per_family']} training tasks per trained rule "
        f"({', '.join(meta.get('rules', TRAINED))}; flip, gravity and swap: the test input tells "
        "the rule; colour_map: a per-task mapping of 3 colours that only the demonstrations "
        "tell; 3 demonstrations + 1 test pair each, every pair a training query), random "
        f"3x3..{meta.get('max_side', 5)}x{meta.get('max_side', 5)} grids "
        f"(arctax.data.families); {meta['per_group']} fresh test tasks per row (another seed; "
        "view_reachable: the trained rules' dihedral conjugates, never trained). Models: the "
        "rungs of `config/ladder.yaml` at the demo sizes (`config/config.yaml` + "
        "`config/demo.yaml` + `config/ladder.yaml`), Trial 69 recipe with at most "
        f"**{meta['epochs']} epochs** (its early stopping on val_loss), seed {meta['seed']}, no "
        "augmented copies. Score: the task's greedy generated answer is exact (one attempt, no "
        "voting, no adaptation). Intervals: 10000 bootstrap resamples over tasks, 95%; the step "
        "is the paired difference to the rung above it in the table, McNemar exact two-sided "
        "(b: tasks only this rung solves, c: only the rung above).",
        "",
        "| rung | model | parameters (vs champion) | epochs | train s |",
        "|---|---|---|---|---|",
    ]
    for m in RUNGS:
        t = meta["trained"][m]
        ratio = counts[m] / champ - 1
        flag = " **not size-matched**" if abs(ratio) > 0.05 else ""
        lines.append(f"| {EXP[m]} | {m} | {counts[m]:,} ({ratio:+.1%}){flag} | "
                     f"{t['epochs']} | {t['train_s']:.0f} |")  # fmt: skip
    by = {(r["group"], r["model"]): r for r in rows}
    controls = list(dict.fromkeys(r["model"] for r in rows if r.get("control")))
    groups = list(dict.fromkeys(r["group"] for r in rows))
    lines += ["", "Tasks solved (greedy generated answer exact), 95% interval over tasks:", "",
              "| row | " + " | ".join(f"{EXP[m]} {m}" for m in RUNGS) + " |",
              "|---|" + "---|" * len(RUNGS)]  # fmt: skip
    for g in groups:
        cells = [by[(g, m)] for m in RUNGS]
        lines.append(f"| {g} (n={cells[0]['n']}) | " + " | ".join(
            f"{_pct(c['acc'])} ({_pct(c['lo'])}, {_pct(c['hi'])})" for c in cells) + " |")  # fmt: skip
    lines += ["", "Each step up the ladder: paired difference in points (95% interval), "
              "b / c discordant tasks, exact McNemar p:", "",
              "| row | " + " | ".join(f"{b} -> {m}" for b, m in itertools.pairwise(RUNGS)) + " |",
              "|---|" + "---|" * (len(RUNGS) - 1)]  # fmt: skip
    for g in groups:
        cells = [by[(g, m)] for m in RUNGS[1:]]
        lines.append(f"| {g} | " + " | ".join(
            f"{100 * c['step']:+.1f} ({100 * c['step_lo']:+.1f}, {100 * c['step_hi']:+.1f}); "
            f"{c['b']} / {c['c']}; p={c['p']:.2g}" for c in cells) + " |")  # fmt: skip
    for m in controls:
        others = COMPARE[m]
        lines += ["", f"Control `{m}` ({counts[m]:,} parameters; {meta['trained'][m]['epochs']} "
                  f"epochs): tasks solved, and its paired difference to each of {', '.join(others)}:",
                  "", f"| row | {m} | " + " | ".join(f"{m} - {o}" for o in others) + " |",
                  "|---|---|" + "---|" * len(others)]  # fmt: skip
        for g in groups:
            c = by[(g, m)]
            lines.append(f"| {g} | {_pct(c['acc'])} ({_pct(c['lo'])}, {_pct(c['hi'])}) | " + " | ".join(
                f"{100 * v['step']:+.1f} ({100 * v['step_lo']:+.1f}, {100 * v['step_hi']:+.1f}); "
                f"{v['b']} / {v['c']}; p={v['p']:.2g}" for v in (c["vs"][o] for o in others)) + " |")  # fmt: skip
    lines += ["", meta.get("notes", ""), ""]
    return "\n".join(lines)


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
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results" / "LADDER.md")
    ap.add_argument("--work", type=Path, default=REPO_ROOT / "results" / "bench-ladder")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--notes", default="", help="a paragraph appended to the report")
    ap.add_argument(
        "--seed", type=int, default=None, help="training seed (default: the ladder's first)"
    )
    ap.add_argument("--controls", action="store_true", help="also train " + ", ".join(CONTROLS))
    ap.add_argument(
        "--render", action="store_true", help="rewrite the report from WORK/ladder.json"
    )
    args = ap.parse_args(argv)
    if args.render:
        blob = json.loads((args.work / "ladder.json").read_text())
        meta = {**blob["meta"], "notes": args.notes or blob["meta"].get("notes", "")}
        text = report(blob["rows"], blob["counts"], meta)
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
    cfg = config(work, args.epochs, args.quick, args.controls)
    models = (*RUNGS, *CONTROLS) if args.controls else RUNGS
    if args.seed is not None:
        cfg["seeds"] = [args.seed]
    from arctax.data.prepare import prepare

    data_dir = work / "data"
    prepare(cfg, data_dir)
    counts = parameter_counts(cfg, models)
    threads = 1 if args.jobs > 1 else max(1, os.cpu_count() or 1)
    order = sorted(models, key=lambda m: -EPOCH_SECONDS.get(m, 4.3))  # longest first
    jobs = [(cfg, m, str(data_dir), str(work / m), threads) for m in order]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            done = list(pool.map(job, jobs))
    else:
        done = [job(j) for j in jobs]
    per_query = pd.DataFrame([r for d in done for r in d["rows"]])
    rows = table(per_query, int(cfg["eval"]["bootstrap_samples"]))
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
        "seed": cfg["seeds"][0],
        "trained": {d["model"]: {k: v for k, v in d.items() if k != "rows"} for d in done},
        "notes": args.notes,
    }
    text = report(rows, counts, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    blob = {"rows": rows, "counts": counts, "meta": meta}
    atomic_write_text(work / "ladder.json", json.dumps(blob, default=str))
    return text


if __name__ == "__main__":
    print(run())
