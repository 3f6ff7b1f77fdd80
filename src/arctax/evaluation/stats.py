"""Statistics over tasks: bootstrap CIs, paired differences, exact McNemar, seed spread.

The unit of every statistic is the ARC *task*: a task with several test queries counts once
(correct only when all its queries are), so tasks with many queries do not weigh more. The
per-example scores (the paper's unit: a mean over queries) resample tasks too
(:func:`cluster_bootstrap_ci`): a task's examples share its rule and are not independent.
Pure numpy + ``math``: the binomial tail of McNemar is summed exactly with integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

METRICS = ("grid_correct", "shape_correct", "cell_acc", "tf_grid_correct", "tf_cell_acc")
RATES = ("grid_correct", "shape_correct", "cell_acc")
NAMES = {"grid_correct": "grid_acc", "shape_correct": "shape_acc", "cell_acc": "cell_acc"}


@dataclass(frozen=True)
class Estimate:
    """A mean with its percentile bootstrap interval."""

    mean: float
    lo: float
    hi: float
    n: int


def task_table(per_query: pd.DataFrame) -> pd.DataFrame:
    """Per-query rows -> one row per (model, seed, task): all-queries-correct, mean cell scores."""
    required = {"model", "seed", "task_id", "category", *METRICS}
    missing = required - set(per_query.columns)
    if missing:
        raise ValueError(f"per-task table lacks columns {sorted(missing)}")
    # a task is solved when all its queries are: the min of 0/1 flags. NaN (no teacher-forced
    # scores for a reference given as predictions) stays NaN instead of counting as solved.
    flags = ("grid_correct", "shape_correct", "tf_grid_correct")
    frame = per_query.astype({c: float for c in flags})
    agg = {
        "category": "first",
        "grid_correct": "min",
        "shape_correct": "min",
        "tf_grid_correct": "min",
        "cell_acc": "mean",
        "tf_cell_acc": "mean",
    }
    out = frame.groupby(["model", "seed", "task_id"], sort=True, dropna=False).agg(agg)
    return out.reset_index()


def _quantiles(samples: np.ndarray, ci: float) -> tuple[float, float]:
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(values: np.ndarray, n_samples: int, ci: float, seed: int) -> Estimate:
    """Mean of ``values`` (one per task) with a seeded percentile bootstrap interval."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_samples, v.size))
    lo, hi = _quantiles(v[idx].mean(axis=1), ci)
    return Estimate(float(v.mean()), lo, hi, int(v.size))


def cluster_bootstrap_ci(
    values: np.ndarray, clusters: np.ndarray, n_samples: int, ci: float, seed: int
) -> Estimate:
    """Mean of ``values`` over examples with a percentile interval that resamples whole
    ``clusters`` (tasks): each replicate draws as many tasks as there are, with replacement,
    and takes the mean over all their examples (a task drawn twice counts twice).

    ``n`` of the estimate is the number of clusters. Examples of one task are not independent
    (150 re-arc examples share a rule), so resampling examples would give too narrow an interval.
    """
    v = np.asarray(values, dtype=float)
    c = np.asarray(clusters)
    if v.shape != c.shape:
        raise ValueError(f"values and clusters differ in shape: {v.shape} vs {c.shape}")
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    _, inverse = np.unique(c, return_inverse=True)
    sums = np.bincount(inverse, weights=v)
    counts = np.bincount(inverse).astype(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sums.size, size=(n_samples, sums.size))
    lo, hi = _quantiles(sums[idx].sum(axis=1) / counts[idx].sum(axis=1), ci)
    return Estimate(float(v.mean()), lo, hi, int(sums.size))


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_samples: int, ci: float, seed: int
) -> Estimate:
    """Mean of ``a - b`` over the same tasks, resampling tasks jointly (a paired interval)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    return bootstrap_ci(a - b, n_samples, ci, seed)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    Under the null each discordant task is a fair coin: p = 2 * P(X <= min(b, c)),
    X ~ Binomial(b + c, 1/2), capped at 1. Integer arithmetic keeps it exact for any n.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def mcnemar(model_correct: np.ndarray, ref_correct: np.ndarray) -> tuple[int, int, float]:
    """``(b, c, p)``: b = tasks only the model solves, c = tasks only the reference solves."""
    m = np.asarray(model_correct, dtype=bool)
    r = np.asarray(ref_correct, dtype=bool)
    b, c = int((m & ~r).sum()), int((~m & r).sum())
    return b, c, mcnemar_exact(b, c)


def seed_spread(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation across seeds (std is NaN for one seed)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def per_task_matrix(tasks: pd.DataFrame, col: str) -> pd.DataFrame:
    """task_id x model matrix of ``col`` averaged over seeds."""
    return tasks.pivot_table(
        index="task_id", columns="model", values=col, aggfunc="mean", dropna=False
    )


def model_row(
    tasks: pd.DataFrame, model: str, ref: str, ids: pd.Index, boot: tuple[int, float, int]
) -> dict[str, Any]:
    """Accuracies with CIs, seed spread, paired difference and McNemar vs ``ref`` over ``ids``."""
    n, ci, seed = boot
    sub = tasks[tasks["task_id"].isin(ids)]
    row: dict[str, Any] = {"model": model, "n_tasks": len(ids)}
    for col in RATES:
        m = per_task_matrix(sub, col)
        est = bootstrap_ci(m[model].to_numpy(), n, ci, seed)
        name = NAMES[col]
        row.update({name: est.mean, f"{name}_lo": est.lo, f"{name}_hi": est.hi})
    per_seed = sub[sub["model"] == model].groupby("seed")["grid_correct"].mean()
    row["n_seeds"] = len(per_seed)
    row["grid_acc_seed_mean"], row["grid_acc_seed_std"] = seed_spread(per_seed.to_numpy())
    for col in ("tf_grid_correct", "tf_cell_acc"):
        row[col.replace("_correct", "_acc")] = float(per_task_matrix(sub, col)[model].mean())
    g = per_task_matrix(sub, "grid_correct")
    d = paired_bootstrap(g[model].to_numpy(), g[ref].to_numpy(), n, ci, seed)
    row.update({"diff_vs_ref": d.mean, "diff_lo": d.lo, "diff_hi": d.hi})
    b, c, p = mcnemar(g[model].to_numpy() >= 0.5, g[ref].to_numpy() >= 0.5)
    row.update({"mcnemar_b": b, "mcnemar_c": c, "mcnemar_p": p})
    return row


# per-example scores (a mean over queries, the paper's unit): column -> name in the tables
EXAMPLE_METRICS = {
    "tf_grid_correct": "ex_tf_grid_acc",
    "tf_cell_acc": "ex_tf_cell_acc",
    "grid_correct": "ex_grid_acc",
    "cell_acc": "ex_cell_acc",
}


def _cluster(frame: pd.DataFrame, col: str, boot: tuple[int, float, int]) -> Estimate:
    """:func:`cluster_bootstrap_ci` of ``col`` over ``frame``'s queries (NaN when any is NaN:
    a reference given as predictions has no teacher-forced scores)."""
    v = frame[col].astype(float).to_numpy()
    if v.size == 0 or np.isnan(v).any():
        return Estimate(math.nan, math.nan, math.nan, frame["task_id"].nunique())
    return cluster_bootstrap_ci(v, frame["task_id"].to_numpy(), *boot)


def example_row(
    per_query: pd.DataFrame, model: str, boot: tuple[int, float, int]
) -> dict[str, Any]:
    """Per-example accuracies of ``model`` (teacher-forced and generated) with CIs that resample
    tasks; with several seeds each query's score is its mean over seeds, and every seed also
    gets its own estimate (``per_seed``) and the seed mean ± std of each metric."""
    sub = per_query[per_query["model"] == model]
    cols = list(EXAMPLE_METRICS)
    frame = sub.astype({c: float for c in cols})
    pooled = frame.groupby(["task_id", "query"], sort=True)[cols].mean().reset_index()
    row: dict[str, Any] = {
        "model": model,
        "n_tasks": int(pooled["task_id"].nunique()),
        "n_examples": len(pooled),
        "n_seeds": int(sub["seed"].nunique()),
    }
    for col, name in EXAMPLE_METRICS.items():
        est = _cluster(pooled, col, boot)
        row.update({name: est.mean, f"{name}_lo": est.lo, f"{name}_hi": est.hi})
    per_seed = []
    for seed, part in frame.groupby("seed", sort=True):
        entry: dict[str, Any] = {"seed": int(seed)}
        for col, name in EXAMPLE_METRICS.items():
            est = _cluster(part, col, boot)
            entry.update({name: est.mean, f"{name}_lo": est.lo, f"{name}_hi": est.hi})
        per_seed.append(entry)
    row["per_seed"] = per_seed
    for name in EXAMPLE_METRICS.values():
        mean, std = seed_spread(np.array([e[name] for e in per_seed]))
        row.update({f"{name}_seed_mean": mean, f"{name}_seed_std": std})
    return row
