"""Fitting and step selection: held-out demonstrations stop an adapter before it memorises,
let it train where it generalises, and a task whose adapter would only memorise keeps the
base model's answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arctax.adaptation.fit import fit_adapters, forward_losses, select_steps
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
    select_unsolved="selected",  # the selection alone (the budget rule: its own tests)
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


def _mostly_threes(seed: int = 2) -> TaskData:
    """Every output is all 3s but one cell of a random colour at a random place: a rule
    fitting can learn (cell by cell) though no held-out answer can ever be exact."""
    rng = np.random.default_rng(seed)
    outputs = []
    for _ in range(3):
        y = np.full((3, 3), 3)
        y[rng.integers(3), rng.integers(3)] = rng.choice([1, 2, 4, 5, 6, 7, 8, 9])
        outputs.append(y)
    return _task(outputs)


CELLS = ACFG.replace(select_metric="cells", select_min_delta=0.01, select_patience=2, lr=3e-3)


def test_cells_selection_keeps_adapting_while_no_held_out_answer_is_exact():
    """The far-rule case: held-out cells improve while exact answers stay 0. ``exact`` keeps
    the base model (0 steps); ``cells`` trains on, and stops where the cells stop improving."""
    task = _mostly_threes()
    exact, _ = _select(task, ACFG.replace(select_metric="exact", select_patience=2))
    assert max(exact.exact[0]) == 0.0 and exact.steps[0] == 0
    cells, _ = _select(task, CELLS)
    assert max(cells.exact[0]) == 0.0
    curve = cells.cells[0]
    assert cells.steps[0] >= 3 * CELLS.select_every, curve  # past the 2 checks `exact` gives
    at = cells.steps[0] // CELLS.select_every
    assert curve[at] > curve[0] + 0.3, curve  # it chose a step where most cells are right
    assert max(curve) <= curve[at] + CELLS.select_min_delta  # the best one, within the margin


def test_cells_selection_stops_on_a_task_that_memorises():
    """Noise outputs: fitting memorises, held-out cells stop improving; the folds stop long
    before the step budget, at a step no later than the held-out loss's best by much."""
    sel, _ = _select(_noise_task(), CELLS)
    curve = sel.cells[0]
    assert len(curve) < CELLS.steps // CELLS.select_every + 1, curve  # stopped early
    assert sel.steps[0] < CELLS.steps // 2
    full, _ = _select(_noise_task(), CELLS.replace(select_patience=100))
    assert full.loss[0][-1] > min(full.loss[0]) + 0.5  # going on would have memorised


def test_budget_trains_on_a_task_the_base_cannot_do_while_cells_improve():
    """``select_unsolved: budget``: no held-out answer exact before fitting, cells improving:
    the whole budget (the far rule's case), where the selection alone stops early."""
    task = _mostly_threes()
    alone, _ = _select(task, CELLS)
    budget, _ = _select(task, CELLS.replace(select_unsolved="budget"))
    assert 0 < alone.steps[0] < CELLS.steps and budget.steps[0] == CELLS.steps
    assert budget.cells[0] == alone.cells[0]  # the same held-out curves: only the choice differs


def test_budget_leaves_a_task_the_base_model_already_answers():
    """A base model that answers the held-out demonstrations exactly has answers to lose: the
    budget rule does not apply, the selection keeps the base (0 steps)."""
    task = _task([np.array([[3]])] * 3)
    model, slot, layers = _model(1 + CELLS.select_folds)
    for la in layers:  # train the BASE weights (not the adapters) to answer [[3]]
        for p in la.base.parameters():
            p.requires_grad_(True)
    base_params = [p for la in layers for p in la.base.parameters()]
    opt = torch.optim.Adam(base_params, lr=1e-2)
    pool = [dict(e, task_idx=0) for e in loo_examples(task, 2, IDENTITY)]
    for _ in range(60):
        opt.zero_grad()
        forward_losses(model, 2, slot, pool, 1).sum().backward()
        opt.step()
    for p in base_params:
        p.requires_grad_(False)
    folds = [heldout_folds(task, 2, IDENTITY, IDENTITY, CELLS.select_folds)]
    sel = select_steps(model, 2, slot, layers, folds, lambda i, j: 1 + j,
                       lambda i, j: np.random.default_rng(j),
                       CELLS.replace(select_unsolved="budget", select_metric="cells"))  # fmt: skip
    assert sel.exact[0][0] == 1.0 and sel.steps[0] == 0


def test_tiebreak_unsolved_lets_cells_break_ties_only_while_no_answer_is_exact():
    """``select_tiebreak: unsolved`` (the in-distribution guard): once a third of the held-out
    answers are exact, a check with as many exact and better cells is not an improvement (the
    earlier checkpoint stays); while none is exact, better cells still are; more exact
    answers always are. ``always`` lets cells break every tie."""
    from arctax.adaptation.fit import improves

    guard, always = (
        CELLS.replace(select_tiebreak="unsolved"),
        CELLS.replace(select_tiebreak="always"),
    )
    some, none = (1 / 3, 0.80), (0.0, 0.80)
    assert improves((1 / 3, 0.85), some, always) and not improves((1 / 3, 0.85), some, guard)
    assert improves((0.0, 0.85), none, guard) and improves((0.0, 0.85), none, always)
    assert improves((2 / 3, 0.10), some, guard)  # more exact answers, whatever the cells
    assert not improves((0.0, 0.805), none, guard)  # within select_min_delta: no progress
    # the guard is the cells metric's: `exact` breaks its ties by the loss (here minus it)
    exact = ACFG.replace(select_metric="exact", select_tiebreak="unsolved")
    assert improves((1 / 3, -0.5), (1 / 3, -0.9), exact)


def test_each_slots_first_and_last_loss_are_its_own_steps(monkeypatch):
    """The losses are read once after the fit (no host read per slot per step): each slot's
    first loss is step 0's, its last the step before its stop, whichever slot stops first."""
    import arctax.adaptation.fit as fit_mod

    seen: list[torch.Tensor] = []
    real = fit_mod.forward_losses

    def spy(*args, **kw):
        out = real(*args, **kw)
        seen.append(out.detach().clone())
        return out

    monkeypatch.setattr(fit_mod, "forward_losses", spy)
    task = _noise_task()
    model, slot, layers = _model(3)
    pools = {s: loo_examples(task, 2, IDENTITY) for s in (0, 1, 2)}
    rngs = {s: np.random.default_rng(s) for s in pools}
    stop = {0: 5, 1: 2, 2: 0}

    def check(step):  # a check may end a slot early, as the selection does
        if step == 3:
            stop[0] = 3

    fit = fit_adapters(model, 2, slot, layers, pools, rngs, ACFG, stop, check, every=1)
    assert len(seen) == 3  # slot 0 stopped at 3, slot 1 at 2, slot 2 never trained
    assert fit.loss_first[0] == float(seen[0][0]) and fit.loss_last[0] == float(seen[2][0])
    assert fit.loss_first[1] == float(seen[0][1]) and fit.loss_last[1] == float(seen[1][1])
    assert np.isnan(fit.loss_first[2]) and np.isnan(fit.loss_last[2])
