"""Fitting per-task adapters, and choosing how long to fit from held-out demonstrations.

:func:`fit_adapters` trains adapter ``i`` on its own example pool for ``stop[i]`` steps, all
adapters in one batched forward; an adapter that has reached its step count leaves the batch
and is restored to its state at that step (Adam's momentum would otherwise keep moving it).

:func:`select_steps` is early stopping without a validation set the task does not have: each
demonstration in turn is held out (a *fold*), an adapter is fitted on the leave-one-out data
of the other demonstrations only, and every ``select_every`` steps the held-out pair is
scored as the test input will be (the other demonstrations as context, under the voting
views): the share of views whose greedy answer would be exact (``select_metric: exact``), the
mean loss (``loss``), or the exact share with the cell accuracy as the sign of progress before
any answer is exact (``cells``: a rule unlike the trained ones needs more steps than exact
answers show progress in). The step count with the best held-out score, averaged over folds,
ties to the fewest steps, is the one the final adapter (fitted on every demonstration) trains for; ``0`` means the adapter does not
help this task and the base model answers alone. An adapter that memorises its
demonstrations drives their training loss down while the held-out loss rises: the selection
stops it before that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from arctax.adaptation.lora import AdapterSlot, LoRALinear, lora_parameters
from arctax.data.collate import collate
from arctax.data.tokenize import BOS, IGNORE_INDEX, PAD, SEP
from arctax.evaluation.decode import to_device
from arctax.settings import Adapt

Example = dict[str, Any]


def task_losses(logits: torch.Tensor, labels: torch.Tensor, slots: torch.Tensor, n: int):
    """Mean answer-token loss of each adapter slot ``(n,)`` (0 for a slot without tokens)."""
    mask = labels != IGNORE_INDEX
    tok = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(labels.shape)
    per_sample, count = (tok * mask).sum(1), mask.sum(1).float()
    sums = torch.zeros(n, device=logits.device).index_add(0, slots, per_sample)
    counts = torch.zeros(n, device=logits.device).index_add(0, slots, count)
    return sums / counts.clamp(min=1.0)


def _batch(model: nn.Module, k: int, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    dev = next(model.parameters()).device
    return to_device(collate(list(examples), model.fmt, k), dev)


def forward_losses(
    model: nn.Module, k: int, slot: AdapterSlot, examples: Sequence[Example], n: int
) -> torch.Tensor:
    """Per-slot mean loss of ``examples`` (each carries its slot as ``task_idx``)."""
    b = _batch(model, k, examples)
    slot.index = b["task_idx"]
    try:
        return task_losses(model(b), b["labels"], b["task_idx"], n)
    finally:
        slot.index = None


@torch.no_grad()
def heldout_scores(
    model: nn.Module, k: int, slot: AdapterSlot, examples: Sequence[Example], n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per slot: the share of ``examples`` the model answers exactly, their mean loss, and
    their mean cell accuracy (the share of answer tokens that are the argmax).

    Exact means every answer token is the argmax (``PAD``/``SEP``/``BOS`` excluded, as in
    greedy decoding) given the true prefix, which is exactly when greedy decoding emits the
    target: one forward pass tells what decoding would. Cell accuracy moves before exact
    answers do: a rule half learnt gets half the cells right and no grid.
    """
    b = _batch(model, k, examples)
    slot.index = b["task_idx"]
    try:
        logits = model(b).float()
    finally:
        slot.index = None
    labels, slots = b["labels"], b["task_idx"]
    loss = task_losses(logits, labels, slots, n)
    logits[..., [PAD, SEP, BOS]] = float("-inf")
    mask = labels != IGNORE_INDEX
    right = logits.argmax(-1) == labels
    exact = (right | ~mask).all(1).float()
    cells = (right & mask).sum(1).float() / mask.sum(1).clamp(min=1).float()
    hits = torch.zeros(n, device=logits.device).index_add(0, slots, exact)
    cell = torch.zeros(n, device=logits.device).index_add(0, slots, cells)
    count = torch.zeros(n, device=logits.device).index_add(0, slots, torch.ones_like(exact))
    return hits / count.clamp(min=1.0), loss, cell / count.clamp(min=1.0)


@dataclass
class FitResult:
    """First and last training loss of each adapter (NaN: it took no step)."""

    loss_first: dict[int, float]
    loss_last: dict[int, float]


def _optimizer(layers: list[LoRALinear], acfg: Adapt) -> torch.optim.Optimizer:
    lr, wd = float(acfg.lr), float(acfg.weight_decay)
    params = lora_parameters(layers)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd) if wd else torch.optim.Adam(params, lr)


def fit_adapters(
    model: nn.Module,
    k: int,
    slot: AdapterSlot,
    layers: list[LoRALinear],
    pools: Mapping[int, Sequence[Example]],
    rngs: Mapping[int, np.random.Generator],
    acfg: Adapt,
    stop: dict[int, int],
    check: Callable[[int], None] | None = None,
    every: int = 0,
) -> FitResult:
    """Fit adapter slot ``s`` on ``pools[s]`` for ``stop[s]`` steps, all in one batch.

    Each step draws ``adapt.batch_size`` examples (without replacement) per active slot.
    ``check(step)`` runs before step 0 and after every ``every`` steps; it may lower
    ``stop[s]`` to the current step to end slot ``s`` there. Every slot ends in the state it
    had at its stop (restored: Adam's momentum would otherwise keep moving it).
    """
    opt = _optimizer(layers, acfg)
    bs = acfg.batch_size
    n = layers[0].A.shape[0]
    first = dict.fromkeys(pools, float("nan"))
    last = dict(first)
    kept: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def snapshot(step: int) -> None:
        for s in pools:
            if stop[s] <= step and s not in kept:
                kept[s] = [(la.A[s].detach().clone(), la.B[s].detach().clone()) for la in layers]

    step = 0
    history: list[torch.Tensor] = []  # each step's per-slot losses, kept on the device
    while True:
        if check is not None and every and step % every == 0:
            check(step)
        snapshot(step)
        active = [s for s in pools if step < stop[s]]
        if not active:
            break
        batch = []
        for s in active:
            pick = rngs[s].choice(len(pools[s]), size=min(bs, len(pools[s])), replace=False)
            batch += [dict(pools[s][j], task_idx=s) for j in sorted(pick)]
        losses = forward_losses(model, k, slot, batch, n)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        history.append(losses.detach())
        step += 1
    with torch.no_grad():
        for s, state in kept.items():
            for la, (a, b) in zip(layers, state, strict=True):
                la.A[s].copy_(a)
                la.B[s].copy_(b)
    # one read of the losses for the whole fit: a slot trains at steps 0 .. stop - 1
    losses_at = torch.stack(history).cpu().tolist() if history else []
    for s in pools:
        if stop[s] > 0:
            first[s], last[s] = losses_at[0][s], losses_at[stop[s] - 1][s]
    return FitResult(first, last)


@dataclass
class Selection:
    """Chosen step counts, and the held-out curves behind each (``None``: not selected):
    the share of held-out answers exact, their loss and cell accuracy, at each checkpoint
    reached."""

    steps: list[int]
    checkpoints: list[int]
    exact: list[list[float] | None]
    loss: list[list[float] | None]
    cells: list[list[float] | None]


def select_steps(
    model: nn.Module,
    k: int,
    slot: AdapterSlot,
    layers: list[LoRALinear],
    folds: Sequence[Sequence[tuple[Sequence[Example], Sequence[Example]]]],
    fold_slot: Callable[[int, int], int],
    rngs: Callable[[int, int], np.random.Generator],
    acfg: Adapt,
) -> Selection:
    """The step count per task with the best held-out score over its folds.

    ``folds[i]`` holds task ``i``'s ``(training pool, held-out examples)`` per fold (empty:
    too few demonstrations to hold one out; the task keeps ``adapt.steps``). Fold ``j`` of
    task ``i`` trains adapter slot ``fold_slot(i, j)`` (fresh), drawing from ``rngs(i, j)``;
    every fold of every task trains in one batch. The score at a checkpoint is the mean
    over folds of the share of exact held-out answers (``select_metric: exact``; ties broken
    by the lower loss), of minus the loss (``loss``), or the exact share and then the cell
    accuracy (``cells``: a checkpoint is better when more answers are exact, or as many and
    its cell accuracy is higher by more than ``select_min_delta``; with ``select_tiebreak:
    unsolved`` the cell accuracy counts only while no answer is exact). A task's folds stop early
    when its score is perfect or has not improved for ``select_patience`` checkpoints; the
    chosen step is the first checkpoint with the best score (the base model, step 0, on a
    tie; with ``cells``, the last checkpoint that improved). With ``select_unsolved: budget``
    a task whose held-out answers the base model never gets exact (step 0), that no check
    answers all exactly, and whose held-out cell accuracy improved by more than
    ``select_min_delta`` gets the whole ``steps``.
    """
    steps, every = acfg.steps, acfg.select_every
    patience = acfg.select_patience
    by_loss = acfg.select_metric == "loss"
    by_cells = acfg.select_metric == "cells"
    delta = acfg.select_min_delta
    n = len(folds)
    pools, rng_of, stop, owner = {}, {}, {}, {}
    for i, task_folds in enumerate(folds):
        for j, (pool, _) in enumerate(task_folds):
            s = fold_slot(i, j)
            pools[s], rng_of[s], stop[s], owner[s] = pool, rngs(i, j), steps, i
    held = [dict(e, task_idx=fold_slot(i, j))
            for i, f in enumerate(folds) for j, (_, h) in enumerate(f) for e in h]  # fmt: skip
    n_slots = layers[0].A.shape[0]
    curves: list[list[tuple[float, float, float]]] = [[] for _ in range(n)]
    best = [(-float("inf"), -float("inf"))] * n
    best_step = [0] * n
    stale = [0] * n

    def check(step: int) -> None:
        live = {i for s, i in owner.items() if step <= stop[s]}
        todo = [e for e in held if owner[e["task_idx"]] in live]
        if not todo:
            return
        hit, loss, cell = heldout_scores(model, k, slot, todo, n_slots)
        for i in sorted(live):
            mine = [s for s, o in owner.items() if o == i]
            ex = float(np.mean([float(hit[s]) for s in mine]))
            lo = float(np.mean([float(loss[s]) for s in mine]))
            ce = float(np.mean([float(cell[s]) for s in mine]))
            curves[i].append((ex, lo, ce))
            score = (-lo, 0.0) if by_loss else (ex, ce) if by_cells else (ex, -lo)
            if improves(score, best[i], acfg):
                best[i], best_step[i], stale[i] = score, step, 0
            else:
                stale[i] += 1
            perfect = not by_loss and ex >= 1.0
            if perfect or stale[i] >= patience or step >= steps:
                for s in mine:
                    stop[s] = min(stop[s], step)

    fit_adapters(model, k, slot, layers, pools, rng_of, acfg, stop, check, every)
    chosen: list[int] = []
    out: dict[str, list[list[float] | None]] = {"ex": [], "lo": [], "ce": []}
    for i in range(n):
        if not folds[i]:
            chosen.append(steps)
            for v in out.values():
                v.append(None)
            continue
        ex, lo, ce = (np.array(c) for c in zip(*curves[i], strict=True))
        if by_cells:
            chosen.append(best_step[i])
        else:
            score = -lo if by_loss else ex
            chosen.append(every * int(np.flatnonzero(score >= score.max() - 1e-9)[0]))
        unsolved = ex[0] <= 1e-9 and ex.max() < 1.0 - 1e-9  # not by the base, nor by fitting
        if acfg.select_unsolved == "budget" and unsolved and ce.max() > ce[0] + delta:
            chosen[-1] = steps  # nothing of the base's to lose, and fitting made progress
        for name, c in (("ex", ex), ("lo", lo), ("ce", ce)):
            out[name].append([round(float(v), 5) for v in c])
    return Selection(chosen, list(range(0, steps + 1, every)), out["ex"], out["lo"], out["ce"])


def improves(score: tuple[float, float], best: tuple[float, float], acfg: Adapt) -> bool:
    """Whether a held-out check's ``score`` (primary, tie-break) beats the ``best`` so far: a
    higher primary score (1e-9 tolerance), or the same one with a tie-break better by more
    than its margin: ``select_min_delta`` for cell accuracy (which with ``select_tiebreak:
    unsolved`` breaks no tie once some answers are exact), 1e-9 otherwise."""
    if score[0] > best[0] + 1e-9:
        return True
    margin = 1e-9
    if acfg.select_metric == "cells":
        margin = acfg.select_min_delta
        if acfg.select_tiebreak == "unsolved" and best[0] > 1e-9:
            return False  # the model already answers some: only more exact answers count
    return abs(score[0] - best[0]) <= 1e-9 and score[1] > best[1] + margin
