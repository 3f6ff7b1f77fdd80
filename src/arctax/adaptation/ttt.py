"""Test-time training: per-task LoRA adapters fitted on a task's demonstrations only.

For each test task the adaptation data are leave-one-out examples built from its
demonstration pairs alone (each pair once the query, the others its context) under
``augment_views`` augmented views (dihedral transforms and colour permutations). The test
inputs are then answered under ``voting_views`` views and voted (pass@2), once with the base
model (voting alone: a fresh adapter is bitwise the base) and once with the fitted adapter.
The test outputs never enter: a task arrives here as :class:`TaskData`, which has none.

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
import torch.nn.functional as F
from torch import nn

from arctax.adaptation.lora import AdapterSlot, LoRALinear, lora_parameters
from arctax.data.augment import Augmentation
from arctax.data.collate import collate
from arctax.data.tokenize import IGNORE_INDEX
from arctax.evaluation.decode import answer_inputs
from arctax.evaluation.voting import task_views, voted_attempts

Grid = np.ndarray
Pair = tuple[Grid, Grid]


@dataclass(frozen=True)
class TaskData:
    """What adaptation may see of a test task: demonstrations and test INPUTS, no outputs."""

    task_id: str
    demos: tuple[Pair, ...]  # every demonstration pair, in task order
    queries: tuple[tuple[int, Grid, tuple[Pair, ...]], ...]  # (test index, input, context)


def _view_pairs(aug: Augmentation, pairs: Sequence[Pair]) -> list[Pair]:
    return [(aug.apply(a), aug.apply(b)) for a, b in pairs]


def loo_examples(task: TaskData, k: int, views: Sequence[Augmentation]) -> list[dict[str, Any]]:
    """Leave-one-out examples from the demonstrations only, under every view."""
    out: list[dict[str, Any]] = []
    for i, (x, y) in enumerate(task.demos):
        others = [d for j, d in enumerate(task.demos) if j != i][:k]
        for aug in views:
            out.append({
                "query_in": aug.apply(x), "query_out": aug.apply(y),
                "context": _view_pairs(aug, others), "task_idx": 0, "example_idx": len(out),
            })  # fmt: skip
    return out


def _task_seed(seed: int, task_id: str) -> int:
    return int(zlib.crc32(f"{seed}:{task_id}".encode()))


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
    """Voted answers of every test query of every task (adapter ``i`` for ``tasks[i]``)."""
    items, owners = [], []
    for t, task in enumerate(tasks):
        for q, (_, x, ctx) in enumerate(task.queries):
            for aug in views[task.task_id]:
                items.append((aug.apply(x), _view_pairs(aug, ctx)))
                owners.append((t, q, aug))
    dev = next(model.parameters()).device
    grids: list[Grid | None] = []
    for start in range(0, len(items), batch_size):  # bounded decode batches
        chunk = owners[start : start + batch_size]
        slot.index = torch.tensor([t for t, _, _ in chunk], dtype=torch.long, device=dev)
        try:
            with torch.no_grad():
                grids += answer_inputs(model, k, items[start : start + batch_size], max_new)
        finally:
            slot.index = None
    ballots: list[dict[int, list[Grid | None]]] = [{} for _ in tasks]
    for (t, q, aug), g in zip(owners, grids, strict=True):
        ballots[t].setdefault(q, []).append(None if g is None else aug.invert(g))
    return [
        {task.queries[q][0]: voted_attempts(b, attempts) for q, b in ballots[t].items()}
        for t, task in enumerate(tasks)
    ]


def adapt_tasks(
    model: nn.Module,
    k: int,
    slot: AdapterSlot,
    layers: list[LoRALinear],
    tasks: Sequence[TaskData],
    acfg: Mapping[str, Any],
    max_new: int,
    decode_batch: int = 64,
) -> list[dict[str, Any]]:
    """Vote with the base model, fit one adapter per task, vote again; one record per task.

    ``model`` carries LoRA layers with at least ``len(tasks)`` adapters (``inject_lora``);
    they are reset here, so the same model serves task after task. The model stays in eval
    mode (no dropout): only the adapters change, deterministically for a given seed.
    """
    n = len(tasks)
    seed = int(acfg["seed"])
    t0 = time.perf_counter()
    for i, task in enumerate(tasks):
        for layer in layers:
            layer.reset(torch.Generator().manual_seed(_task_seed(seed, task.task_id)), [i])
    model.eval()
    vote_views = {
        t.task_id: task_views(int(acfg["voting_views"]), seed + 1, t.task_id) for t in tasks
    }
    attempts = int(acfg.get("attempts", 2))
    voted = answer(model, k, slot, tasks, vote_views, attempts, max_new, decode_batch)
    t_vote = time.perf_counter() - t0

    pools = []
    for i, task in enumerate(tasks):
        views = task_views(int(acfg["augment_views"]), seed, task.task_id)
        pools.append([dict(e, task_idx=i) for e in loo_examples(task, k, views)])
    rngs = [np.random.default_rng(_task_seed(seed, t.task_id)) for t in tasks]
    dev = next(model.parameters()).device
    opt = torch.optim.Adam(lora_parameters(layers), lr=float(acfg["lr"]))
    bs, steps = int(acfg["batch_size"]), int(acfg["steps"])
    first = last = torch.zeros(n)
    t1 = time.perf_counter()
    for step in range(steps):
        batch = []
        for pool, rng in zip(pools, rngs, strict=True):
            pick = rng.choice(len(pool), size=min(bs, len(pool)), replace=False)
            batch += [pool[j] for j in sorted(pick)]
        b = {name: v.to(dev) for name, v in collate(batch, model.fmt, k).items()}
        slot.index = b["task_idx"]
        try:
            losses = task_losses(model(b), b["labels"], b["task_idx"], n)
        finally:
            slot.index = None
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        last = losses.detach().cpu()
        if step == 0:
            first = last
    t_fit = time.perf_counter() - t1
    t2 = time.perf_counter()
    adapted = answer(model, k, slot, tasks, vote_views, attempts, max_new, decode_batch)
    t_answer = time.perf_counter() - t2
    share = 1.0 / n
    return [
        {
            "task_id": task.task_id,
            "vote": voted[i],
            "adapt": adapted[i],
            "examples": len(pools[i]),
            "steps": steps,
            "loss_first": float(first[i]),
            "loss_last": float(last[i]),
            "seconds": round((t_vote + t_fit + t_answer) * share, 4),
            "tasks_in_batch": n,
        }
        for i, task in enumerate(tasks)
    ]
