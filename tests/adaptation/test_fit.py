"""Fitting and step selection: held-out demonstrations stop an adapter before it memorises,
let it train where it generalises, and a task whose adapter would only memorise keeps the
base model's answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arctax.adaptation.fit import fit_adapters, select_steps
from arctax.adaptation.lora import inject_lora
from arctax.adaptation.ttt import TaskData, adapt_tasks, adapter_slots, heldout_folds, loo_examples
from arctax.data.augment import Augmentation
from arctax.models import build_model
from arctax.settings import Adapt
from tests.conftest import TINY_MODELS, adapt_settings

ACFG = adapt_settings(
    seed=0,
    rank=4,
    alpha=8.0,
    lr=1e-2,
    batch_size=8,
    steps=48,
    select="heldout",
    select_every=4,
    select_folds=3,
    select_patience=100,
    select_metric="loss",
    augment_views=2,
    voting_views=2,
    attempts=2,
    colour_views=False,
    pool="both",
    scoring="votes",
    weight_decay=0.0,
)
IDENTITY = [Augmentation()]


def _model(slots: int):
    torch.manual_seed(0)
    model = build_model("encoder_decoder", dict(TINY_MODELS["encoder_decoder"], dropout=0.0))
    slot, layers = inject_lora(model.eval(), ["q", "kv", "out", "mlp", "head"], 4, 8.0, slots)
    return model, slot, layers


def _task(outputs, seed: int = 0) -> TaskData:
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(1, 10, (3, 3)) for _ in range(4)]
    demos = tuple((x, y) for x, y in zip(inputs[:3], outputs, strict=True))
    return TaskData("t", demos, ((0, inputs[3], demos[:2]),))


def _noise_task() -> TaskData:
    """Demonstrations without a rule: every output is random noise, unrelated to its input.
    Fitting can only memorise them, which must make a held-out demonstration worse."""
    rng = np.random.default_rng(1)
    return _task([rng.integers(1, 10, (3, 3)) for _ in range(3)])


def _select(task: TaskData, acfg: Adapt):
    model, slot, layers = _model(1 + acfg.select_folds)
    folds = [heldout_folds(task, 2, IDENTITY, IDENTITY, acfg.select_folds)]
    sel = select_steps(model, 2, slot, layers, folds, lambda i, j: 1 + j,
                       lambda i, j: np.random.default_rng(j), acfg)  # fmt: skip
    return sel, (model, slot, layers)


def test_selection_stops_before_memorisation():
    task = _noise_task()
    sel, (model, slot, layers) = _select(task, ACFG)
    curve, chosen = sel.loss[0], sel.steps[0]
    assert len(curve) == ACFG.steps // ACFG.select_every + 1  # patience 100: the whole curve
    at = chosen // ACFG.select_every
    assert chosen < ACFG.steps and curve[at] == min(curve)
    assert curve[-1] > curve[at] + 0.5, curve  # the held-out pair got worse as fitting went on
    # ... while the same fitting memorises its own data: training loss near zero
    pool = {0: loo_examples(task, 2, IDENTITY)}
    fit = fit_adapters(model, 2, slot, layers, pool, {0: np.random.default_rng(0)}, ACFG,
                       {0: ACFG.steps})  # fmt: skip
    assert fit.loss_last[0] < 0.25 * fit.loss_first[0]
    # with patience, the folds stop soon after the best checkpoint, at the same choice
    early, _ = _select(task, ACFG.replace(select_patience=2))
    assert early.steps[0] == chosen and len(early.loss[0]) == at + 3


def test_selection_trains_where_the_held_out_pair_improves():
    """Every output is [[3]]: a rule fitting learns, so held-out answers become exact."""
    sel, _ = _select(_task([np.array([[3]])] * 3), ACFG.replace(select_metric="exact"))
    assert sel.exact[0][0] == 0.0 and max(sel.exact[0]) == 1.0
    assert sel.steps[0] == ACFG.select_every * sel.exact[0].index(1.0) > 0


@pytest.mark.parametrize("metric", ["exact", "loss"])
def test_a_task_that_can_only_be_memorised_keeps_the_base_answers(metric):
    acfg = ACFG.replace(select_metric=metric, select_patience=2)
    model, slot, layers = _model(adapter_slots(acfg, 1))
    rec = adapt_tasks(model, 2, slot, layers, [_noise_task()], acfg, 20)[0]
    if metric == "exact":  # nothing held out is ever exact: the base model (0 steps) wins ties
        assert rec["steps"] == 0 and rec["loss_first"] is None
        for g, h in zip(rec["adapt"][0], rec["vote"][0], strict=True):
            assert (g is None and h is None) or np.array_equal(g, h)
    assert rec["steps"] < acfg.steps


def test_fitting_restores_each_adapter_at_its_own_stop():
    task = _noise_task()
    pool = loo_examples(task, 2, IDENTITY)
    runs = {}
    for stops in ({0: 6, 1: 6}, {0: 6, 1: 12}):
        model, slot, layers = _model(2)
        rngs = {s: np.random.default_rng(s) for s in stops}
        fit_adapters(model, 2, slot, layers, {0: pool, 1: pool}, rngs, ACFG, dict(stops))
        runs[stops[1]] = [la.B.detach().clone() for la in layers]
    # slot 0 stopped at 6 both times: the same weights, whatever slot 1 did after
    for a, b in zip(runs[6], runs[12], strict=True):
        assert torch.allclose(a[0], b[0], atol=1e-6) and not torch.allclose(a[1], b[1])
