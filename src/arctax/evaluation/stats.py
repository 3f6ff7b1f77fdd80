"""Statistics over tasks: bootstrap CIs, paired differences, exact McNemar, seed spread, Holm.

The unit of every statistic is the ARC *task*: a task with several test queries counts once
(correct only when all its queries are), so tasks with many queries do not weigh more. The
per-example scores (the paper's unit: a mean over queries) resample tasks too: a task's
examples share its rule and are not independent.

With several training seeds every interval is a **two-level bootstrap**
(:func:`two_level_ci`): each replicate draws the tasks with replacement, then, within each drawn
task, the seeds with replacement, so seed-to-seed variance is in the interval (averaging the
seeds first would leave it out). Two models on the same test set are compared example by
example (:func:`paired_two_level`): the same tasks drawn for both, each model's seeds drawn on
their own, with a p-value from the recentred replicates and the smallest difference the test
set can detect (:func:`detectable`, from the same replicates); a study's p-values are corrected
together by :func:`holm`. Pure numpy + ``math`` + ``statistics``: the binomial tail of McNemar
is summed exactly with integers; 92 tasks x 150 examples x 3 seeds x 2000 replicates take
milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

METRICS = ("grid_correct", "shape_correct", "cell_acc", "tf_grid_correct", "tf_token_acc",
           "paper_grid_correct", "paper_cells_right", "paper_cells")  # fmt: skip
RATES = ("grid_correct", "shape_correct", "cell_acc")
NAMES = {"grid_correct": "grid_acc", "shape_correct": "shape_acc", "cell_acc": "cell_acc"}
POWER = 0.8  # of the smallest detectable difference


@dataclass(frozen=True)
class Estimate:
    """A mean with its percentile bootstrap interval (``se``: the replicates' standard
    deviation, NaN where not computed)."""

    mean: float
    lo: float
    hi: float
    n: int
    se: float = math.nan


def task_table(per_query: pd.DataFrame) -> pd.DataFrame:
    """Per-query rows -> one row per (model, seed, task): all-queries-correct, mean cell scores."""
    required = {"model", "seed", "task_id", "category", *METRICS}
    missing = required - set(per_query.columns)
    if missing:
        raise ValueError(
            f"per-task table lacks columns {sorted(missing)}: written by an older arctax? "
            "re-run its evaluate step"
        )
    # a task is solved when all its queries are: the min of 0/1 flags. NaN (no teacher-forced
    # scores for a reference given as predictions) stays NaN instead of counting as solved.
    flags = ("grid_correct", "shape_correct", "tf_grid_correct", "paper_grid_correct")
    frame = per_query.astype({c: float for c in (*flags, "paper_cells_right", "paper_cells")})
    agg = {
        "category": "first",
        "grid_correct": "min",
        "shape_correct": "min",
        "tf_grid_correct": "min",
        "paper_grid_correct": "min",
        "cell_acc": "mean",
        "tf_token_acc": "mean",
        "paper_cells_right": lambda v: v.sum(min_count=1),
        "paper_cells": lambda v: v.sum(min_count=1),
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


def _draws(nums: list[np.ndarray], den: np.ndarray, n_samples: int, seed: int) -> list[np.ndarray]:
    """Bootstrap replicates of ``sum_t mean_s num[t, s] / sum_t den[t]`` for each ``num``
    (``(T, S)``: per task and seed) over the SAME task draws: tasks with replacement, then each
    drawn task's seeds with replacement (one draw of seeds per array)."""
    rng = np.random.default_rng(seed)
    n_tasks = den.size
    tasks = rng.integers(0, n_tasks, size=(n_samples, n_tasks))
    total = den[tasks].sum(axis=1)
    out = []
    for num in nums:
        n_seeds = num.shape[1]
        if n_seeds == 1:
            picked = num[tasks, 0]
        else:
            seeds = rng.integers(0, n_seeds, size=(n_samples, n_tasks, n_seeds))
            picked = num[tasks[..., None], seeds].mean(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(picked.sum(axis=1) / total)
    return out


def _point(num: np.ndarray, den: np.ndarray) -> float:
    return float(num.mean(axis=1).sum() / den.sum()) if den.sum() else math.nan


def _check(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if num.ndim == 1:
        num = num[:, None]
    if num.ndim != 2 or num.shape[0] != den.shape[0]:
        raise ValueError(f"values (tasks, seeds) {num.shape} do not fit {den.shape[0]} tasks")
    return num, den


def two_level_ci(
    num: np.ndarray, den: np.ndarray, n_samples: int, ci: float, seed: int
) -> Estimate:
    """``sum_t mean_s num[t, s] / sum_t den[t]`` with a two-level percentile interval.

    ``num``: per task and seed, the sum of a score over the task's examples (``(T,)`` for one
    seed); ``den``: per task, its examples (or its cells: a pooled cell accuracy). A task's
    score per seed (``den`` all 1) gives the task-level mean. Tasks are resampled, then seeds
    within each drawn task: with two seeds or more the seed-to-seed variance is in the interval.
    NaN anywhere (a reference without teacher-forced scores) gives a NaN estimate.
    """
    num, den = _check(num, den)
    if den.size == 0 or np.isnan(num).any() or np.isnan(den).any() or not den.sum():
        return Estimate(math.nan, math.nan, math.nan, int(den.size))
    (reps,) = _draws([num], den, n_samples, seed)
    lo, hi = _quantiles(reps, ci)
    return Estimate(_point(num, den), lo, hi, int(den.size), float(reps.std(ddof=1)))


@dataclass(frozen=True)
class Paired:
    """A paired difference ``a - b``: its interval, the replicates' standard error, the
    two-sided p-value of the recentred replicates and the smallest detectable difference."""

    diff: float
    lo: float
    hi: float
    se: float
    p: float
    mdd: float
    n: int


def paired_two_level(
    num_a: np.ndarray, num_b: np.ndarray, den: np.ndarray, n_samples: int, ci: float, seed: int
) -> Paired:
    """Model ``a`` minus model ``b`` on the same test set, example by example.

    ``num_a``, ``num_b``: ``(T, S_a)``, ``(T, S_b)`` per task and seed sums over the same
    examples; ``den``: examples (or cells) per task. Each replicate draws the tasks once for
    both (the pairing) and each model's seeds on their own (different training runs). The
    p-value is two-sided: the share of recentred replicates at least as far from 0 as the
    observed difference (``(1 + k) / (1 + n_samples)``); ``mdd`` is :func:`detectable` of their
    standard error.
    """
    num_a, den = _check(num_a, den)
    num_b, _ = _check(num_b, den)
    bad = den.size == 0 or not den.sum() or np.isnan(num_a).any() or np.isnan(num_b).any()
    if bad:
        return Paired(*(math.nan,) * 6, int(den.size))
    ra, rb = _draws([num_a, num_b], den, n_samples, seed)
    reps = ra - rb
    d = _point(num_a, den) - _point(num_b, den)
    lo, hi = _quantiles(reps, ci)
    se = float(reps.std(ddof=1))
    k = int((np.abs(reps - reps.mean()) >= abs(d) - 1e-12).sum())
    p = (1 + k) / (1 + n_samples)
    return Paired(d, lo, hi, se, min(1.0, p), detectable(se, ci), int(den.size))


def detectable(se: float, ci: float, power: float = POWER) -> float:
    """The smallest true difference a two-sided test at level ``1 - ci`` finds with probability
    ``power``, for an estimate of standard error ``se``: ``(z_(1+ci)/2 + z_power) * se``."""
    z = NormalDist()
    return (z.inv_cdf((1 + ci) / 2) + z.inv_cdf(power)) * se


def holm(p: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error over all of ``p``; NaN stays NaN).

    Sorted ascending, the i-th smallest (from 0) of m is multiplied by ``m - i``, made
    non-decreasing, capped at 1."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order]) if m else np.array([])
    out[order] = np.minimum(1.0, adj)
    return out


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


def seed_sums(
    frame: pd.DataFrame, col: str, ids: pd.Index, den_col: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(num (T, S), den (T,))`` for :func:`two_level_ci`: per task of ``ids`` and seed, the sum
    of ``col`` over the task's rows; per task, its rows in one seed (or the sum of ``den_col``:
    cells, for a pooled cell accuracy). NaN in ``col`` gives NaN (no such score)."""
    nums, dens = seed_sums_many(frame, [col], ids, {col: den_col})
    return nums[col], dens[col]


def seed_sums_many(
    frame: pd.DataFrame, cols: list[str], ids: pd.Index, den_cols: dict[str, str | None]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`seed_sums` of several columns from ONE grouping (the seeds in sorted order)."""
    seeds = sorted(frame["seed"].unique())
    shape = (len(ids), max(1, len(seeds)))
    extra = sorted({d for d in den_cols.values() if d} - set(cols))
    vals = frame[[*cols, *extra]].astype(float)
    sums = vals.assign(task_id=frame["task_id"], seed=frame["seed"]).groupby(
        ["task_id", "seed"], sort=True
    )
    total = sums.sum()
    rows = sums.size().unstack("seed").reindex(index=ids, columns=seeds)
    nums, dens = {}, {}
    for col in cols:
        bad = vals[col].isna().any() or not seeds
        grid = total[col].unstack("seed").reindex(index=ids, columns=seeds)
        nums[col] = np.full(shape, math.nan) if bad else grid.to_numpy(float)
        d = den_cols.get(col)
        first = rows.iloc[:, 0] if d is None else total[d].unstack("seed").reindex(ids).iloc[:, 0]
        dens[col] = np.ones(len(ids)) if bad else first.to_numpy(float)
    return nums, dens


def _set(row: dict[str, Any], name: str, est: Estimate, ci: float) -> None:
    row.update({name: est.mean, f"{name}_lo": est.lo, f"{name}_hi": est.hi,
                f"{name}_se": est.se, f"{name}_mdd": detectable(est.se, ci)})  # fmt: skip


def model_row(
    tasks: pd.DataFrame, model: str, ref: str, ids: pd.Index, boot: tuple[int, float, int]
) -> dict[str, Any]:
    """Accuracies with CIs (two-level: tasks, then seeds), seed spread, paired difference and
    McNemar vs ``ref`` over ``ids``."""
    n, ci, seed = boot
    sub = tasks[tasks["task_id"].isin(ids)]
    mine, theirs = sub[sub["model"] == model], sub[sub["model"] == ref]
    row: dict[str, Any] = {"model": model, "n_tasks": len(ids)}
    for col in RATES:
        num, den = seed_sums(mine, col, ids)
        _set(row, NAMES[col], two_level_ci(num, den, n, ci, seed), ci)
    per_seed = mine.groupby("seed")["grid_correct"].mean()
    row["n_seeds"] = len(per_seed)
    row["grid_acc_seed_mean"], row["grid_acc_seed_std"] = seed_spread(per_seed.to_numpy())
    for col in ("tf_grid_correct", "tf_token_acc", "paper_grid_correct"):
        name = col.replace("_correct", "_acc")
        row[name] = float(per_task_matrix(sub, col)[model].mean())
    num_a, den = seed_sums(mine, "grid_correct", ids)
    num_b, _ = seed_sums(theirs, "grid_correct", ids)
    d = paired_two_level(num_a, num_b, den, n, ci, seed)
    row.update({"diff_vs_ref": d.diff, "diff_lo": d.lo, "diff_hi": d.hi})
    g = per_task_matrix(sub, "grid_correct")
    b, c, p = mcnemar(g[model].to_numpy() >= 0.5, g[ref].to_numpy() >= 0.5)
    row.update({"mcnemar_b": b, "mcnemar_c": c, "mcnemar_p": p})
    return row


# per-example scores (a mean over queries, the paper's unit): column -> (name in the tables,
# the column it is pooled over: None = per example)
EXAMPLE_METRICS = {
    "tf_grid_correct": ("ex_tf_grid_acc", None),
    "tf_token_acc": ("ex_tf_token_acc", None),
    "paper_grid_correct": ("ex_paper_grid_acc", None),
    "paper_cells_right": ("ex_paper_cell_acc", "paper_cells"),
    "grid_correct": ("ex_grid_acc", None),
    "cell_acc": ("ex_cell_acc", None),
}


def example_row(
    per_query: pd.DataFrame, model: str, boot: tuple[int, float, int]
) -> dict[str, Any]:
    """Per-example accuracies of ``model`` (teacher-forced, ours and the paper's, and generated)
    with two-level CIs (tasks, then seeds within them), their standard errors and smallest
    detectable differences (``_se``, ``_mdd``); every seed also gets its own estimate
    (``per_seed``) and the seed mean ± std of each metric."""
    n, ci, seed = boot
    sub = per_query[per_query["model"] == model]
    ids = pd.Index(sorted(sub["task_id"].unique()))
    seeds = sorted(sub["seed"].unique())
    row: dict[str, Any] = {
        "model": model,
        "n_tasks": len(ids),
        "n_examples": len(sub[["task_id", "query"]].drop_duplicates()),
        "n_seeds": len(seeds),
    }
    dens = {col: den for col, (_, den) in EXAMPLE_METRICS.items()}
    nums, denoms = seed_sums_many(sub, list(EXAMPLE_METRICS), ids, dens)
    per_seed: list[dict[str, Any]] = [{"seed": int(s)} for s in seeds]
    for col, (name, _) in EXAMPLE_METRICS.items():
        num, den = nums[col], denoms[col]
        _set(row, name, two_level_ci(num, den, n, ci, seed), ci)
        for j, entry in enumerate(per_seed):
            _set(entry, name, two_level_ci(num[:, j], den, n, ci, seed), ci)
    row["per_seed"] = per_seed
    for name, _ in EXAMPLE_METRICS.values():
        mean, std = seed_spread(np.array([e[name] for e in per_seed]))
        row.update({f"{name}_seed_mean": mean, f"{name}_seed_std": std})
    return row


def paired_examples(
    per_query: pd.DataFrame, a: str, b: str, col: str, boot: tuple[int, float, int]
) -> Paired:
    """Model ``a`` minus model ``b``, example by example on the same test set, for ``col`` of
    :data:`EXAMPLE_METRICS` (:func:`paired_two_level`: tasks, then each model's seeds)."""
    n, ci, seed = boot
    den_col = EXAMPLE_METRICS[col][1]
    pa, pb = per_query[per_query["model"] == a], per_query[per_query["model"] == b]
    ids = pd.Index(sorted(set(pa["task_id"]) & set(pb["task_id"])))
    num_a, den = seed_sums(pa, col, ids, den_col)
    num_b, _ = seed_sums(pb, col, ids, den_col)
    return paired_two_level(num_a, num_b, den, n, ci, seed)
