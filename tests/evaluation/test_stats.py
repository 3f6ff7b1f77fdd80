"""Statistics against hand-computed values and a coverage sanity check."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_per_query

from arctax.evaluation.stats import (
    bootstrap_ci,
    cluster_bootstrap_ci,
    detectable,
    example_row,
    holm,
    mcnemar,
    mcnemar_exact,
    paired_bootstrap,
    paired_two_level,
    seed_spread,
    task_table,
    two_level_ci,
)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (1, 6, 0.125),  # 2 * (1 + 7) / 2**7
        (6, 1, 0.125),
        (0, 0, 1.0),
        (0, 5, 0.0625),  # 2 / 2**5
        (5, 5, 1.0),  # capped
        (2, 8, 2 * (1 + 10 + 45) / 1024),
    ],
)
def test_mcnemar_exact_hand_values(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_large_n_stays_exact():
    # 0.5**n in floats would underflow near n=1075; integer arithmetic does not mind
    assert mcnemar_exact(500, 700) == pytest.approx(
        2 * sum(math.comb(1200, i) for i in range(501)) / 2**1200, rel=1e-12
    )
    assert 0 < mcnemar_exact(500, 700) < 1e-7
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar_exact(-1, 2)


def test_mcnemar_counts_discordant_tasks():
    m = np.array([1, 1, 0, 0, 1], bool)
    r = np.array([1, 0, 1, 1, 1], bool)
    assert mcnemar(m, r) == (1, 2, 1.0)


def test_bootstrap_is_seeded_and_brackets_the_mean(rng):
    v = rng.random(50) < 0.3
    a = bootstrap_ci(v, 2000, 0.95, seed=1)
    assert a == bootstrap_ci(v, 2000, 0.95, seed=1)
    w = rng.random(50)  # continuous values: another seed must move the interval
    assert bootstrap_ci(w, 300, 0.95, seed=1) != bootstrap_ci(w, 300, 0.95, seed=2)
    assert a.lo < a.mean < a.hi and a.n == 50
    assert a.mean == pytest.approx(v.mean())
    const = bootstrap_ci(np.ones(10), 100, 0.95, seed=0)
    assert (const.mean, const.lo, const.hi) == (1.0, 1.0, 1.0)
    assert math.isnan(bootstrap_ci(np.array([]), 100, 0.95, 0).mean)


def test_bootstrap_ci_coverage(rng):
    # a 95% interval on Bernoulli(0.3), n=100 should hold the truth in roughly 95% of datasets
    hits = 0
    trials = 200
    for t in range(trials):
        v = rng.random(100) < 0.3
        e = bootstrap_ci(v, 400, 0.95, seed=t)
        hits += e.lo <= 0.3 <= e.hi
    assert 0.88 <= hits / trials <= 0.99


def test_paired_bootstrap():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], float)
    same = paired_bootstrap(a, a, 500, 0.95, 0)
    assert (same.mean, same.lo, same.hi) == (0.0, 0.0, 0.0)
    d = paired_bootstrap(a, np.zeros_like(a), 500, 0.95, 0)
    assert d.mean == pytest.approx(5 / 8) and d.lo > 0
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(a, a[:3], 10, 0.95, 0)


def test_task_table_needs_every_query():
    cats = {"t1": "S1", "t2": "C1"}
    df = synthetic_per_query("m", 0, {"t1": [True, False], "t2": [True]}, cats)
    t = task_table(df).set_index("task_id")
    assert t.loc["t1", "grid_correct"] == 0.0 and t.loc["t2", "grid_correct"] == 1.0
    assert t.loc["t1", "cell_acc"] == pytest.approx(0.75)
    assert list(t["category"]) == ["S1", "C1"]
    with pytest.raises(ValueError, match="grid_correct"):
        task_table(df.drop(columns="grid_correct"))


def test_seed_spread():
    m, s = seed_spread(np.array([0.1, 0.3]))
    assert m == pytest.approx(0.2) and s == pytest.approx(math.sqrt(0.02))
    assert math.isnan(seed_spread(np.array([0.5]))[1])


def test_cluster_bootstrap_resamples_tasks_not_examples():
    # one task with 20 all-correct examples, nine tasks with 20 all-wrong ones: 10% of examples
    clusters = np.repeat(np.arange(10), 20)
    values = (clusters == 0).astype(float)
    by_task = cluster_bootstrap_ci(values, clusters, 4000, 0.95, 0)
    by_example = bootstrap_ci(values, 4000, 0.95, 0)  # what resampling examples would say
    assert by_task.mean == by_example.mean == pytest.approx(0.1)
    assert by_task.n == 10 and by_example.n == 200
    # the task-resampled replicates are 0, 0.1, 0.2, ...: the interval reaches 0 and 0.3
    assert by_task.lo == 0.0 and by_task.hi >= 0.3
    assert (by_task.hi - by_task.lo) > 3 * (by_example.hi - by_example.lo)
    # one example per task: resampling tasks is resampling examples (the same draws)
    single = cluster_bootstrap_ci(values[::20], np.arange(10), 4000, 0.95, 0)
    plain = bootstrap_ci(values[::20], 4000, 0.95, 0)
    assert (single.lo, single.hi) == (plain.lo, plain.hi)


def test_cluster_bootstrap_weighs_a_task_by_its_examples():
    # task a: 3 of 3 right; task b: 0 of 1. Per example 3/4 (not the per-task 1/2)
    est = cluster_bootstrap_ci(np.array([1, 1, 1, 0.0]), np.array(["a", "a", "a", "b"]),
                               2000, 0.95, 0)  # fmt: skip
    assert est.mean == 0.75 and est.n == 2
    assert est.lo == 0.0 and est.hi == 1.0  # replicates: b twice (0), a and b (3/4), a twice (1)
    with pytest.raises(ValueError, match="shape"):
        cluster_bootstrap_ci(np.ones(3), np.ones(2), 10, 0.95, 0)


def test_example_row_pools_seeds_per_query_and_keeps_each_seeds_ci():
    a = synthetic_per_query("m", 1, {"t0": [True, True], "t1": [False]}, {"t0": "c", "t1": "c"})
    b = synthetic_per_query("m", 2, {"t0": [True, False], "t1": [False]}, {"t0": "c", "t1": "c"})
    row = example_row(pd.concat([a, b]), "m", (500, 0.95, 0))
    assert (row["n_tasks"], row["n_examples"], row["n_seeds"]) == (2, 3, 2)
    assert row["ex_grid_acc"] == pytest.approx((1 + 0.5 + 0) / 3)  # each query's seed mean
    assert [s["ex_grid_acc"] for s in row["per_seed"]] == pytest.approx([2 / 3, 1 / 3])
    assert row["ex_grid_acc_seed_mean"] == pytest.approx(0.5)
    assert row["ex_grid_acc_seed_std"] == pytest.approx(np.std([2 / 3, 1 / 3], ddof=1))
    assert row["ex_tf_token_acc"] == pytest.approx(0.9)
    # pooled over cells: (8 + 8 + 6) right of 3 x 8 (seed 1), (8 + 6 + 6) of 24 (seed 2)
    assert row["ex_paper_cell_acc"] == pytest.approx((22 + 20) / 2 / 24)
    assert row["ex_paper_grid_acc"] == pytest.approx((1 + 0.5 + 0) / 3)


def _null_and_gain(rng, gain: float, n_tasks: int = 92, n_ex: int = 150):
    """Per task sums ``(T, 1)`` of two models' right answers on the same examples: ``b`` is
    ``a`` with 2% of examples re-drawn at random (both ways) and ``gain`` of all examples
    turned from wrong to right."""
    p = rng.beta(0.5, 6, size=n_tasks)[:, None]  # tasks of very different difficulty
    a = rng.random((n_tasks, n_ex)) < p
    b = a.copy()
    redraw = rng.random(b.shape) < 0.02
    b[redraw] = (rng.random(b.shape) < p)[redraw]
    wrong = np.argwhere(~b)
    pick = wrong[rng.choice(len(wrong), round(gain * b.size), replace=False)]
    b[tuple(pick.T)] = True
    return a.sum(1)[:, None].astype(float), b.sum(1)[:, None].astype(float)


def test_the_paired_bootstrap_sees_a_one_point_gain_and_not_a_null_one():
    """92 tasks x 150 examples: a constructed +1 point per-example gain is found (CI above 0,
    p < 0.05); with no gain, at most 10% of seeded draws are flagged."""
    den = np.full(92, 150.0)
    rng = np.random.default_rng(0)
    a, b = _null_and_gain(rng, 0.01)
    d = paired_two_level(b, a, den, 2000, 0.95, 0)
    assert d.diff == pytest.approx((b.sum() - a.sum()) / 13800)
    assert d.lo > 0 and d.p < 0.05 and d.mdd < 0.01  # the test set can see a point
    flagged = 0
    for i in range(40):
        a, b = _null_and_gain(np.random.default_rng(100 + i), 0.0)
        flagged += paired_two_level(b, a, den, 2000, 0.95, i).p < 0.05
    assert flagged <= 4, flagged
    unpaired = two_level_ci(b, den, 2000, 0.95, 0)
    assert 2 * unpaired.se > d.se  # pairing removes the tasks' own spread


def test_seed_variance_is_in_the_interval_once_there_are_two_seeds():
    """Two seeds that disagree task by task: averaging them first hides their spread; the
    two-level bootstrap keeps it (a wider interval), and one seed is the plain task bootstrap."""
    rng = np.random.default_rng(3)
    s1 = (rng.random(50) < 0.5).astype(float)
    s2 = 1 - s1  # every task right in exactly one seed
    both = two_level_ci(np.stack([s1, s2], 1), np.ones(50), 4000, 0.95, 0)
    pooled = two_level_ci((s1 + s2)[:, None] / 2, np.ones(50), 4000, 0.95, 0)
    assert both.mean == pooled.mean == 0.5 and pooled.hi - pooled.lo == 0  # no spread left
    assert both.hi - both.lo > 0.15
    one = two_level_ci(s1, np.ones(50), 4000, 0.95, 0)
    plain = bootstrap_ci(s1, 4000, 0.95, 0)
    assert one.mean == plain.mean and abs((one.hi - one.lo) - (plain.hi - plain.lo)) < 0.05


def test_holm_on_a_known_case():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> 0.06
    got = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert got[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(got[4])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 capped; 0.9 kept monotone
    assert holm([]).size == 0


def test_the_smallest_detectable_difference_is_the_normal_rule():
    assert detectable(0.01, 0.95) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)
