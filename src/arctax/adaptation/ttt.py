"""Test-time training: per-task LoRA adapters fitted on a task's demonstrations only.

For each test task the adaptation data are leave-one-out examples built from its
demonstration pairs alone (each pair once the query, the others its context) under
``augment_views`` augmented views (dihedral transforms and colour permutations). The test
inputs are answered under ``voting_views`` views, once with the base model (voting alone: a
fresh adapter is bitwise the base) and once with the fitted adapter. The test outputs never
enter: a task arrives here as :class:`TaskData`, which has none.

How long each adapter trains is chosen per task from held-out demonstrations
(``adapt.select: heldout``, :mod:`arctax.adaptation.fit`); the adapted attempts are picked
from a candidate pool (``adapt.pool``: the adapted model's answers, and the base model's
too with ``both``) by counting votes or by the adapted model's likelihood across the views
(``adapt.scoring``, :mod:`arctax.evaluation.likelihood`). docs/results/ADAPTATION.md measures each choice.

Several tasks train at once (``tasks_per_batch``): each sample uses its task's adapter, the
frozen base is shared, and each task's loss is the mean over its own tokens, so every adapter
gets the gradient it would get alone (Adam's state is per element, hence per adapter too).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from arctax.adaptation.fit import fit_adapters, select_steps, task_losses
from arctax.adaptation.lora import AdapterSlot, LoRALinear
from arctax.data.augment import Augmentation
from arctax.evaluation.decode import answer_inputs
from arctax.evaluation.likelihood import rank_by_score, score_candidates
from arctax.evaluation.voting import task_views, vote, voted_attempts
from arctax.settings import Adapt

Grid = np.ndarray
Pair = tuple[Grid, Grid]
__all__ = ["TaskData", "adapt_tasks", "adapter_slots", "answer", "loo_examples", "task_losses"]


@dataclass(frozen=True)
class TaskData:
    """What adaptation may see of a test task: demonstrations and test INPUTS, no outputs."""

    task_id: str
    demos: tuple[Pair, ...]  # every demonstration pair, in task order
    queries: tuple[tuple[int, Grid, tuple[Pair, ...]], ...]  # (test index, input, context)


def _view_pairs(aug: Augmentation, pairs: Sequence[Pair]) -> list[Pair]:
    return [(aug.apply(a), aug.apply(b)) for a, b in pairs]


def loo_examples(
    task: TaskData, k: int, views: Sequence[Augmentation], demos: Sequence[Pair] | None = None
) -> list[dict[str, Any]]:
    """Leave-one-out examples from the demonstrations only (or the subset ``demos``), under
    every view: each pair once the query, the others (at most ``k``) its context."""
    pairs = list(task.demos if demos is None else demos)
    out: list[dict[str, Any]] = []
    for i, (x, y) in enumerate(pairs):
        others = [d for j, d in enumerate(pairs) if j != i][:k]
        for aug in views:
            out.append({
                "query_in": aug.apply(x), "query_out": aug.apply(y),
                "context": _view_pairs(aug, others), "task_idx": 0, "example_idx": len(out),
            })  # fmt: skip
    return out


def heldout_folds(
    task: TaskData, k: int, train_views: Sequence[Augmentation],
    check_views: Sequence[Augmentation], max_folds: int,
) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:  # fmt: skip
    """Per held-out demonstration ``j`` (the first ``max_folds``): the leave-one-out pool of
    the other demonstrations, and demonstration ``j`` posed as a test input is (the others
    as its context) under every check view. None for a task of fewer than 3 demonstrations:
    holding one out would leave a single pair, with no context to learn from."""
    if len(task.demos) < 3:
        return []
    folds = []
    for j in range(min(max_folds, len(task.demos))):
        rest = [d for i, d in enumerate(task.demos) if i != j]
        x, y = task.demos[j]
        held = [{"query_in": v.apply(x), "query_out": v.apply(y), "task_idx": 0,
                 "example_idx": e, "context": _view_pairs(v, rest[:k])}
                for e, v in enumerate(check_views)]  # fmt: skip
        folds.append((loo_examples(task, k, train_views, rest), held))
    return folds


def _task_seed(seed: int, task_id: str, fold: int | None = None) -> int:
    key = f"{seed}:{task_id}" if fold is None else f"{seed}:{task_id}:fold{fold}"
    return int(zlib.crc32(key.encode()))


def ballots(
    model: nn.Module,
    k: int,
    slot: AdapterSlot,
    tasks: Sequence[TaskData],
    views: Mapping[str, Sequence[Augmentation]],
    max_new: int,
    batch_size: int = 64,
    slots: Sequence[int] | None = None,
) -> list[list[list[Grid | None]]]:
    """Every view's greedy answer, mapped back, per task and test query (adapter
    ``slots[i]``, default ``i``, for ``tasks[i]``): ``out[task][query][view]``."""
    items, owners = [], []
    for t, task in enumerate(tasks):
        for q, (_, x, ctx) in enumerate(task.queries):
            for aug in views[task.task_id]:
                items.append((aug.apply(x), _view_pairs(aug, ctx)))
                owners.append((t, q, aug))
    dev = next(model.parameters()).device
    which = list(slots) if slots is not None else list(range(len(tasks)))
    grids: list[Grid | None] = []
    for start in range(0, len(items), batch_size):  # bounded decode batches
        chunk = owners[start : start + batch_size]
        slot.index = torch.tensor([which[t] for t, _, _ in chunk], dtype=torch.long, device=dev)
        try:
            with torch.no_grad():
                grids += answer_inputs(model, k, items[start : start + batch_size], max_new)
        finally:
            slot.index = None
    out: list[list[list[Grid | None]]] = [[[] for _ in task.queries] for task in tasks]
    for (t, q, aug), g in zip(owners, grids, strict=True):
        out[t][q].append(None if g is None else aug.invert(g))
    return out


def answer(
    model: nn.Module,
    k: int,
    slot: AdapterSlot,
    tasks: Sequence[TaskData],
    views: Mapping[str, Sequence[Augmentation]],
    attempts: int,
    max_new: int,
    batch_size: int = 64,
) -> list[dict[int, list[Grid | None]]]:
    """Voted answers (counting) of every test query of every task."""
    got = ballots(model, k, slot, tasks, views, max_new, batch_size)
    return [
        {task.queries[q][0]: voted_attempts(b, attempts) for q, b in enumerate(got[t])}
        for t, task in enumerate(tasks)
    ]


def choose(
    model: nn.Module,
    k: int,
    slot: AdapterSlot,
    t: int,
    task: TaskData,
    q: int,
    pool: Sequence[Grid | None],
    views: Sequence[Augmentation],
    acfg: Adapt,
) -> list[Grid | None]:
    """The attempts for query ``q`` of ``task`` (adapter ``t``) from its candidate ``pool``."""
    attempts = acfg.attempts
    if acfg.scoring == "votes":
        return voted_attempts(pool, attempts)
    candidates = vote(pool, top=len(pool))  # unique answers, most voted first
    if not candidates:
        return [None] * attempts
    _, x, ctx = task.queries[q]
    dev = next(model.parameters()).device
    slot.index = torch.full((1,), t, dtype=torch.long, device=dev)  # every sample: adapter t
    try:
        scores = score_candidates(model, k, x, ctx, candidates, views)
    finally:
        slot.index = None
    best = rank_by_score(candidates, scores, attempts)
    return best + [None] * (attempts - len(best))


def _finite(v: float) -> float | None:
    return None if np.isnan(v) else v


def adapter_slots(acfg: Adapt, tasks_per_batch: int) -> int:
    """Adapters the LoRA layers must hold for ``tasks_per_batch`` tasks at once: one per
    task, and one per held-out fold of each task when the steps are selected."""
    folds = acfg.select_folds if acfg.select == "heldout" else 0
    return tasks_per_batch * (1 + folds)


def adapt_tasks(
    model: nn.Module,
    k: int,
    slot: AdapterSlot,
    layers: list[LoRALinear],
    tasks: Sequence[TaskData],
    acfg: Adapt,
    max_new: int,
    decode_batch: int = 64,
) -> list[dict[str, Any]]:
    """Vote with the base model, fit one adapter per task, answer again; one record per task.

    ``model`` carries LoRA layers with at least ``len(tasks)`` adapters (``inject_lora``);
    they are reset here, so the same model serves task after task. The model stays in eval
    mode (no dropout): only the adapters change, deterministically for a given seed.
    """
    n = len(tasks)
    seed = acfg.seed
    t0 = time.perf_counter()

    folds_per_task = acfg.select_folds
    selecting = acfg.selecting
    need = n * (1 + folds_per_task) if selecting else n
    if layers[0].A.shape[0] < need:
        raise ValueError(
            f"{n} tasks need {need} adapter slots (adapter_slots), the model has "
            f"{layers[0].A.shape[0]}"
        )

    def fold_slot(i: int, j: int) -> int:
        return n + i * folds_per_task + j

    def reset() -> None:
        for i, task in enumerate(tasks):
            for layer in layers:
                layer.reset(torch.Generator().manual_seed(_task_seed(seed, task.task_id)), [i])
                if selecting:
                    for j in range(folds_per_task):
                        gen = torch.Generator().manual_seed(_task_seed(seed, task.task_id, j))
                        layer.reset(gen, [fold_slot(i, j)])

    reset()
    model.eval()
    vote_views = {
        t.task_id: task_views(acfg.voting_views, seed + 1, t.task_id, acfg.colour_views)
        for t in tasks
    }
    attempts = acfg.attempts
    base = ballots(model, k, slot, tasks, vote_views, max_new, decode_batch)
    voted = [
        {task.queries[q][0]: voted_attempts(b, attempts) for q, b in enumerate(base[t])}
        for t, task in enumerate(tasks)
    ]
    # the base model without voting: its greedy answer (view 0, the task itself), and as a
    # second attempt its answer under the next view, as `eval.attempts: 2` does
    plain = [
        {task.queries[q][0]: (b + [None] * attempts)[:attempts] for q, b in enumerate(base[t])}
        for t, task in enumerate(tasks)
    ]
    t_vote = time.perf_counter() - t0

    t1 = time.perf_counter()
    fit_views = [task_views(acfg.augment_views, seed, t.task_id, acfg.colour_views) for t in tasks]
    steps = acfg.steps
    selection = None
    stop = dict.fromkeys(range(n), steps)
    if selecting:
        folds = [
            heldout_folds(task, k, fit_views[i], vote_views[task.task_id], folds_per_task)
            for i, task in enumerate(tasks)
        ]
        selection = select_steps(
            model, k, slot, layers, folds, fold_slot,
            lambda i, j: np.random.default_rng(_task_seed(seed, tasks[i].task_id, j)), acfg,
        )  # fmt: skip
        stop = dict(enumerate(selection.steps))
    pools = [loo_examples(task, k, fit_views[i]) for i, task in enumerate(tasks)]
    rngs = {i: np.random.default_rng(_task_seed(seed, t.task_id)) for i, t in enumerate(tasks)}
    fit = fit_adapters(model, k, slot, layers, dict(enumerate(pools)), rngs, acfg, stop)
    t_fit = time.perf_counter() - t1

    t2 = time.perf_counter()
    # an adapter that took no step is bitwise the base model: its ballots are the base's
    fitted = [i for i in range(n) if stop[i] > 0]
    adapted = list(base)
    if fitted:
        got = ballots(model, k, slot, [tasks[i] for i in fitted], vote_views, max_new,
                      decode_batch, slots=fitted)  # fmt: skip
        for i, b in zip(fitted, got, strict=True):
            adapted[i] = b
    keep_base = acfg.pool == "both"
    answers = []
    for t, task in enumerate(tasks):
        views = vote_views[task.task_id]
        answers.append({
            task.queries[q][0]: choose(model, k, slot, t, task, q,
                                       [*adapted[t][q], *(base[t][q] if keep_base else [])],
                                       views, acfg)
            for q in range(len(task.queries))
        })  # fmt: skip
    t_answer = time.perf_counter() - t2
    share = 1.0 / n
    return [
        {
            "task_id": task.task_id,
            "base": plain[i],
            "vote": voted[i],
            "adapt": answers[i],
            "examples": len(pools[i]),
            "steps": stop[i],
            "heldout_exact": None if selection is None else selection.exact[i],
            "heldout_loss": None if selection is None else selection.loss[i],
            "heldout_cells": None if selection is None else selection.cells[i],
            "heldout_checkpoints": None if selection is None else selection.checkpoints,
            "loss_first": _finite(fit.loss_first[i]),  # None: not fitted (0 steps)
            "loss_last": _finite(fit.loss_last[i]),
            "seconds": round((t_vote + t_fit + t_answer) * share, 4),
            "tasks_in_batch": n,
        }
        for i, task in enumerate(tasks)
    ]
