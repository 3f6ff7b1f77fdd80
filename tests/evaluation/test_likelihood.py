"""Scoring candidates by likelihood across views: the exact log-probability of each grid, and
a case where it picks the right answer that counting votes misses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arctax.data.augment import Augmentation
from arctax.data.collate import collate
from arctax.data.tokenize import BOS, PAD, SEP
from arctax.evaluation.likelihood import rank_by_score, score_candidates
from arctax.evaluation.voting import voted_attempts
from arctax.models import build_model
from tests.conftest import TINY_MODELS, memorise

X = np.array([[1, 2], [3, 0]])
RIGHT = np.array([[2, 1], [0, 3]])
WRONG = np.array([[1, 1], [1, 1]])
CONTEXT = ((np.array([[4, 0]]), np.array([[0, 4]])), (np.array([[5, 6]]), np.array([[6, 5]])))
VIEWS = [Augmentation(d) for d in range(4)]


@pytest.fixture(scope="module")
def model():
    """A tiny champion that has learnt RIGHT as the answer to X under every view."""
    torch.manual_seed(0)
    m = build_model("champion", dict(TINY_MODELS["champion"], encoder_dropout=0.0,
                                     decoder_dropout=0.0))  # fmt: skip
    examples = [
        {"query_in": v.apply(X), "query_out": v.apply(RIGHT), "task_idx": 0, "example_idx": i,
         "context": [(v.apply(a), v.apply(b)) for a, b in CONTEXT]}
        for i, v in enumerate(VIEWS)
    ]  # fmt: skip
    memorise(m, collate(examples, "champion", 2), lr=3e-3)
    return m.eval()


def test_scores_are_the_mean_over_views_of_each_grids_log_probability(model):
    got = score_candidates(model, 2, X, CONTEXT, [RIGHT, WRONG], VIEWS)
    want = []
    for c in (RIGHT, WRONG):  # an independent count: token by token, masked like greedy decoding
        total = 0.0
        for v in VIEWS:
            ex = {"query_in": v.apply(X), "query_out": v.apply(c), "task_idx": 0,
                  "example_idx": 0, "context": [(v.apply(a), v.apply(b)) for a, b in CONTEXT]}  # fmt: skip
            b = collate([ex], "champion", 2)
            with torch.no_grad():
                logits = model(b)[0].double()
            logits[:, [PAD, SEP, BOS]] = -np.inf
            logp = torch.log_softmax(logits, -1)
            total += sum(float(logp[t, int(y)]) for t, y in enumerate(b["labels"][0]) if y >= 0)
        want.append(total / len(VIEWS))
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert got[0] > got[1]


def test_likelihood_picks_the_right_answer_that_counting_misses(model):
    pool = [WRONG, WRONG, WRONG, RIGHT, RIGHT]  # three views agree on a wrong answer
    assert np.array_equal(voted_attempts(pool, 2)[0], WRONG)
    candidates = [WRONG, RIGHT]  # the unique answers, most voted first
    scores = score_candidates(model, 2, X, CONTEXT, candidates, VIEWS)
    best = rank_by_score(candidates, scores, 2)
    assert np.array_equal(best[0], RIGHT) and np.array_equal(best[1], WRONG)


def test_ranking_is_stable_on_ties():
    cands = [np.array([[1]]), np.array([[2]]), np.array([[3]])]
    got = rank_by_score(cands, np.array([0.5, 0.7, 0.7]), 2)
    assert [int(g[0, 0]) for g in got] == [2, 3]
