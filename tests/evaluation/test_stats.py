"""Statistics against hand-computed values and a coverage sanity check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import synthetic_per_query

from arctax.evaluation.stats import (
    bootstrap_ci,
    mcnemar,
    mcnemar_exact,
    paired_bootstrap,
    seed_spread,
    task_table,
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
