"""Whole-epoch training throughput: length grouping vs random batches, on all of ARC-AGI-1.

Usage::

    python benchmarks/epoch_estimate.py          # ~8 min on 2 CPU cores; docs/results/BENCHMARKS_EPOCH.md
    python benchmarks/epoch_estimate.py --quick  # seconds (tiny models, a smoke test)

``make bench`` times grids of at most 100 cells, where random batches already hold ~50% real
tokens; a real Trial 69 epoch has every size (22% real tokens in random batches, 80% grouped)
and random batches of up to 60k padded tokens, which are far too slow to time all of on a CPU.
This script estimates the time of one whole training epoch (encoder_decoder and the plain
``nn.Transformer`` baseline, full Trial 69 sizes, batch 32) by stratified sampling: each
variant's batches are sorted by padded size and cut into ``--strata`` equal groups; the median
batch of each group is timed (interleaved across variants, median over ``--reps`` rounds after a
warm-up) and stands for its group. Every variant trains on the same examples, so the ratio of
estimated epoch times is the ratio of tokens/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench
from baseline import BaselineTransformer
from bench_train import train_pass
from harness import Timed, interleave, machine, make_batches, to_device, token_counts

from arctax.data.dataset import load_split
from arctax.data.prepare import prepare
from arctax.io import atomic_write_text
from arctax.models import build_model
from arctax.settings import Settings, load_settings
from arctax.training.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]


def strata(batches: list[Any], padded: np.ndarray, k: int) -> list[tuple[Any, int]]:
    """``k`` (representative batch, weight) pairs: the median batch of each size stratum."""
    order = np.argsort(padded, kind="stable")
    groups = [g for g in np.array_split(order, k) if len(g)]
    return [(batches[int(g[len(g) // 2])], len(g)) for g in groups]


def main(argv: list[str] | None = None) -> str:
    """Estimate whole-epoch training time per variant; print and write the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models and data (smoke test)")
    ap.add_argument("--strata", type=int, default=4, help="timed batches per variant")
    ap.add_argument("--reps", type=int, default=2, help="timed rounds after the warm-up")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "BENCHMARKS_EPOCH.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    cfg = load_settings()
    bs = cfg.trial69.batch_size
    if args.quick:
        cfg = Settings.of({**cfg.raw, "models": bench.QUICK_MODELS})
        cfg = cfg.with_overrides({"data": {"max_cells": 25, "max_tasks": 40}})
        bs = 8
    dev = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="arctax-epoch-") as tmp:
        prepare(cfg.data, cfg.taxonomy, Path(tmp))
        ds = load_split(Path(tmp), "train")
    everything = np.arange(len(ds))
    ed = cfg.models["encoder_decoder"].config()
    plans = {
        "encoder_decoder, length-grouped": (lambda: build_model("encoder_decoder", ed), True),
        "encoder_decoder, random batches": (lambda: build_model("encoder_decoder", ed), False),
        "baseline nn.Transformer, random batches": (lambda: BaselineTransformer(**ed), False),
    }
    timed, info = [], {}
    clip = float(cfg.trial69.gradient_clip_val)
    for name, (make, grouped) in plans.items():
        batches = make_batches(ds, everything, "encoder_decoder", bs, grouped, seed=0)
        real, _ = map(sum, zip(*(token_counts(b) for b in batches), strict=True))
        padded = np.array([token_counts(b)[1] for b in batches])
        picks = strata(batches, padded, args.strata)
        torch.manual_seed(0)
        model = make().to(dev)
        opt = build_optimizer(model.parameters(), cfg.trial69)
        on_dev = [to_device(b, dev) for b, _ in picks]
        info[name] = {
            "batches": len(batches),
            "fraction": real / int(padded.sum()),
            "weights": [w for _, w in picks],
            "padded": [token_counts(b)[1] for b, _ in picks],
        }
        timed.append(
            Timed(
                name,
                [lambda m=model, o=opt, b=b: train_pass(m, o, [b], clip) for b in on_dev],
                dev,
                warm=lambda m=model, o=opt, b=on_dev[0]: train_pass(m, o, [b], clip),
            )
        )
    interleave(timed, args.reps, "epoch estimate")
    rows, est = [], {}
    for v in timed:
        i = info[v.name]
        medians = [statistics.median(x) for x in zip(*v.times, strict=True)]
        est[v.name] = sum(w * m for w, m in zip(i["weights"], medians, strict=True))
        steps = ", ".join(
            f"{p / 1000:.1f}k: {m:.2f}s" for p, m in zip(i["padded"], medians, strict=True)
        )
        rows += [
            (v.name, "batches per epoch", f"{i['batches']}", ""),
            (v.name, "real-token fraction (whole epoch)", f"{i['fraction']:.3f}", ""),
            (v.name, "timed steps (padded tokens: median s)", steps, ""),
            (v.name, "estimated epoch time", f"{est[v.name]:.1f}", "s"),
            (v.name, "tokens/s", f"{real / est[v.name]:.0f}", "real tokens"),
        ]
    names = list(plans)
    rows += [
        ("RATIO", "tokens/s ours grouped / baseline", f"{est[names[2]] / est[names[0]]:.2f}x",
         "target >= 3x"),
        ("RATIO", "  of which length grouping", f"{est[names[1]] / est[names[0]]:.2f}x", ""),
        ("RATIO", "  of which model code", f"{est[names[2]] / est[names[1]]:.2f}x", ""),
    ]  # fmt: skip
    text = "\n".join(
        [
            "# arctax whole-epoch estimate",
            "",
            f"Generated by `python benchmarks/epoch_estimate.py"
            f"{' ' + ' '.join(argv or sys.argv[1:]) if (argv or sys.argv[1:]) else ''}` on "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} "
            f"(total {time.perf_counter() - t0:.0f} s).",
            "",
            f"- Machine: {machine()}; load average {load0:.2f} / {os.getloadavg()[0]:.2f}.",
            f"- One training epoch of {len(ds)} examples ({real} real tokens), batch {bs}, "
            f"full Trial 69 model sizes, every grid size; {args.strata} strata per variant, "
            f"{args.reps} timed rounds after a warm-up, median per step; a step = forward + "
            "loss + backward + clip + Adam.",
            "",
            "| variant | measure | value | unit |",
            "|---|---|---:|---|",
            *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
            "",
        ]
    )
    print(text)
    atomic_write_text(args.out, text)  # never a half-written report
    return text


if __name__ == "__main__":
    main()
