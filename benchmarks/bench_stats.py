"""How long the comparison's statistics take at the paper's scale (``make bench-stats``).

Usage::

    python benchmarks/bench_stats.py            # 92 tasks x 150 examples x 3 seeds, 2000 and 10000 resamples
    python benchmarks/bench_stats.py --quick    # seconds: 10 tasks x 5 examples (the test suite)

Prints the median of repeated rounds (after a warm-up) of: the two-level bootstrap of one
per-example estimate from its per task and seed sums (:func:`arctax.evaluation.stats.two_level_ci`),
the paired two-level bootstrap of two models (:func:`paired_two_level`), and the whole per-model
row and one paired comparison from a per-query table as ``compare`` builds them
(:func:`example_row`: six measurements and each seed's own; :func:`paired_examples`), pandas
aggregation included.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import median_time

from arctax.evaluation.stats import (
    example_row,
    paired_examples,
    paired_two_level,
    seed_sums,
    two_level_ci,
)


def per_query(n_tasks: int, n_ex: int, seeds: int, models: int, rng) -> pd.DataFrame:
    """A per-query table like ``evaluate`` writes: ``models`` x ``seeds`` x every example."""
    p = rng.beta(0.5, 6, size=n_tasks)
    frames = []
    for m in range(models):
        for s in range(seeds):
            ok = rng.random((n_tasks, n_ex)) < p[:, None]
            cells = rng.integers(1, 100, (n_tasks, n_ex))
            frames.append(pd.DataFrame({
                "model": f"m{m}", "seed": 307 + s,
                "task_id": np.repeat([f"t{t:03d}" for t in range(n_tasks)], n_ex),
                "query": np.tile(np.arange(n_ex), n_tasks), "grid_correct": ok.ravel(),
                "cell_acc": ok.ravel() * 1.0, "tf_grid_correct": ok.ravel(),
                "tf_token_acc": ok.ravel() * 1.0, "paper_grid_correct": ok.ravel(),
                "paper_cells_right": (cells * ok).ravel(), "paper_cells": cells.ravel(),
            }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def median_s(fn, reps: int) -> float:
    """Median seconds of ``fn`` over ``reps`` runs after one warm-up run."""
    fn()
    return median_time(fn, reps)


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n_tasks, n_ex, seeds, reps = (10, 5, 2, 1) if args.quick else (92, 150, 3, 5)
    rng = np.random.default_rng(0)
    pq = per_query(n_tasks, n_ex, seeds, 2, rng)
    ids = pd.Index(sorted(pq["task_id"].unique()))
    a, den = seed_sums(pq[pq["model"] == "m0"], "grid_correct", ids)
    b, _ = seed_sums(pq[pq["model"] == "m1"], "grid_correct", ids)
    rows = []
    for n in (2000, 10000):
        rows.append((f"two_level_ci, {n} resamples",
                     median_s(lambda n=n: two_level_ci(a, den, n, 0.95, 0), reps)))  # fmt: skip
        rows.append((f"paired_two_level, {n} resamples",
                     median_s(lambda n=n: paired_two_level(a, b, den, n, 0.95, 0), reps)))  # fmt: skip
        boot = (n, 0.95, 0)
        rows.append((f"example_row (one model, per query table), {n} resamples",
                     median_s(lambda boot=boot: example_row(pq, "m0", boot), reps)))  # fmt: skip
        rows.append((f"paired_examples (per query table), {n} resamples",
                     median_s(lambda boot=boot: paired_examples(pq, "m0", "m1", "grid_correct",
                                                                boot), reps)))  # fmt: skip
    print(f"{n_tasks} tasks x {n_ex} examples x {seeds} seeds; median of {reps} rounds; "
          f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    for name, s in rows:
        print(f"  {name:<58} {1000 * s:8.1f} ms")
    return rows


if __name__ == "__main__":
    main()
