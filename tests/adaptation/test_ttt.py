"""Test-time training: views invert exactly, voting is a deterministic majority, the test
outputs never reach the adapter, and several tasks trained in one batch learn as if alone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from arctax.adaptation.lora import inject_lora
from arctax.adaptation.run import task_data
from arctax.adaptation.ttt import adapt_tasks, adapter_slots, loo_examples
from arctax.data.dataset import load_split
from arctax.evaluation.voting import task_views, vote, voted_attempts
from arctax.models import build_model
from tests.conftest import TINY_MODELS, adapt_settings

ACFG = adapt_settings(
    seed=3,
    voting_views=3,
    augment_views=3,
    lr=3e-3,
    batch_size=8,
    steps=3,
    attempts=2,
    colour_views=True,
    select="none",
    pool="adapted",
)


def test_every_view_inverts_exactly():
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 10, (h, w)) for h, w in [(1, 1), (1, 7), (3, 5), (30, 2), (9, 9)]]
    views = task_views(64, seed=1, task_id="t")
    assert len({(v.dihedral, tuple(v.perm)) for v in views}) == 64  # distinct
    assert views[0].is_identity and {v.dihedral for v in views} == set(range(8))
    for v in views:
        assert v.perm[0] == 0  # the background keeps its colour
        for g in grids:
            out = v.apply(g)
            assert np.array_equal(v.invert(out), g)
            if v.dihedral % 2:  # a quarter turn swaps the sides
                assert out.shape == g.shape[::-1]
    assert [v.dihedral for v in task_views(5, 1, "t")] == [v.dihedral for v in views[:5]]
    plain = task_views(64, seed=1, task_id="t", colours=False)  # dihedral only: 8 at most
    assert sorted(v.dihedral for v in plain) == list(range(8)) and plain[0].is_identity
    assert all(np.array_equal(v.perm, np.arange(10)) for v in plain)
    assert [v.dihedral for v in task_views(3, 1, "t", colours=False)] == [
        v.dihedral for v in plain[:3]
    ]


def test_voting_takes_the_majority_and_breaks_ties_by_first_seen():
    a, b, c = np.array([[1]]), np.array([[2]]), np.array([[1, 1]])
    assert [x.tolist() for x in vote([a, b, b, None, c, b, a])] == [[[2]], [[1]]]
    # ties: the answer produced first (in view order) wins; None never counts
    assert [x.tolist() for x in vote([c, a, a, c])] == [[[1, 1]], [[1]]]
    assert [x.tolist() for x in vote([None, b, a])] == [[[2]], [[1]]]
    assert vote([None, None]) == [] and voted_attempts([None], 2) == [None, None]
    assert [x.tolist() for x in voted_attempts([a, a], 2) if x is not None] == [[[1]]]
    # shape is part of the identity: [[1, 1]] and [[1], [1]] are different answers
    assert len(vote([np.array([[1, 1]]), np.array([[1], [1]])])) == 2


def test_adaptation_data_are_demonstrations_only(tiny_data):
    ds = load_split(tiny_data, "test")
    for task_id in ds.task_ids[:10]:
        task = task_data(ds, task_id)
        views = task_views(4, 0, task_id)
        examples = loo_examples(task, 2, views)
        assert len(examples) == len(task.demos) * 4
        allowed = {
            (v.apply(g).shape, v.apply(g).tobytes()) for v in views for d in task.demos for g in d
        }
        for e in examples:
            for g in [e["query_in"], e["query_out"], *[x for p in e["context"] for x in p]]:
                assert (g.shape, g.tobytes()) in allowed
        # leave one out: under the identity view, example i's context is the other pairs
        for i, e in enumerate(examples[::4]):
            others = [d for j, d in enumerate(task.demos) if j != i][:2]
            assert np.array_equal(e["query_in"], task.demos[i][0])
            assert len(e["context"]) == len(others)
            for (x, y), (a, b) in zip(e["context"], others, strict=True):
                assert np.array_equal(x, a) and np.array_equal(y, b)


def _sentinel_outputs(src, dst):
    """A copy of the cache where every test OUTPUT grid is replaced by nonsense (colour 9)."""
    shutil.copytree(src, dst)
    with np.load(dst / "test.npz") as z:
        a = {k: z[k] for k in z.files}
    outs = set(a["ex_grids"][:, 1].tolist())
    for g in outs:
        o, n = a["grid_offset"][g], int(a["grid_h"][g]) * int(a["grid_w"][g])
        a["cells"][o : o + n] = 9
    np.savez_compressed(dst / "test.npz", **a)


SELECT = ACFG.replace(
    select="heldout",
    select_every=1,
    select_folds=2,
    select_metric="loss",
    select_patience=1,
    pool="both",
)


@pytest.mark.parametrize("acfg", [ACFG, SELECT], ids=["fixed steps", "held-out selection"])
def test_test_outputs_never_influence_the_answers(tiny_data, tmp_path, acfg):
    """Answers after adaptation are bitwise the same when every test output is destroyed."""
    _sentinel_outputs(tiny_data, tmp_path / "data")
    results = []
    for d in (tiny_data, tmp_path / "data"):
        ds = load_split(d, "test")
        torch.manual_seed(0)
        model = build_model("champion", TINY_MODELS["champion"]).eval()
        slot, layers = inject_lora(model, ["q", "kv", "out", "mlp"], 2, 4.0, adapter_slots(acfg, 2))
        tasks = [task_data(ds, t) for t in ds.task_ids[:2]]
        results.append(adapt_tasks(model, 2, slot, layers, tasks, acfg, 40))
    for r1, r2 in zip(*results, strict=True):
        assert r1["loss_last"] == r2["loss_last"] and r1["steps"] == r2["steps"]
        for kind in ("vote", "adapt"):
            for q in r1[kind]:
                for g, h in zip(r1[kind][q], r2[kind][q], strict=True):
                    assert (g is None and h is None) or np.array_equal(g, h)


@pytest.mark.parametrize("acfg", [ACFG, SELECT], ids=["fixed steps", "held-out selection"])
def test_tasks_trained_in_one_batch_learn_as_if_alone(tiny_data, acfg):
    """Alone or three tasks to a batch (with their held-out folds: 9 adapters), every task
    gets the same steps, losses and answers."""
    ds = load_split(tiny_data, "test")
    tasks = [task_data(ds, t) for t in ds.task_ids[:3]]

    def run(group_size):
        torch.manual_seed(0)
        model = build_model("encoder_decoder", dict(TINY_MODELS["encoder_decoder"], dropout=0.0))
        model.double().eval()  # float64: only the batching differs, not the rounding
        slot, layers = inject_lora(
            model, ["q", "kv", "out", "mlp"], 2, 4.0, adapter_slots(acfg, group_size)
        )
        out = []
        for i in range(0, len(tasks), group_size):
            out += adapt_tasks(model, 2, slot, layers, tasks[i : i + group_size], acfg, 30)
        return out

    alone, batched = run(1), run(3)
    for a, b in zip(alone, batched, strict=True):
        assert (
            a["task_id"] == b["task_id"] and a["tasks_in_batch"] == 1 and b["tasks_in_batch"] == 3
        )
        assert a["steps"] == b["steps"]
        if a["heldout_loss"] is not None or b["heldout_loss"] is not None:
            assert a["heldout_loss"] == pytest.approx(b["heldout_loss"], rel=1e-5)
        if a["steps"] == 0:
            continue
        assert a["loss_first"] == pytest.approx(b["loss_first"], rel=1e-6)
        assert a["loss_last"] == pytest.approx(b["loss_last"], rel=1e-5)
        assert a["loss_last"] < a["loss_first"]  # steps of Adam on the adapter help
        for g, h in zip(a["adapt"][0], b["adapt"][0], strict=True):
            assert (g is None and h is None) or np.array_equal(g, h)
    if acfg is SELECT:  # the selection ran (tasks of 3+ demonstrations have a held-out curve)
        assert any(r["heldout_loss"] for r in alone)
