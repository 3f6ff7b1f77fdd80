"""Candidate answers scored by the model's likelihood across views (a product of experts).

Counting votes asks each view for its one greedy answer; scoring asks each view how likely
it finds *every* candidate. A candidate's score is the mean over views of the log-probability
the model gives to the candidate seen through that view (teacher-forced, every token of the
grid, ``EOS`` included), the product of the views' distributions as ARChitects rank their
candidates. A view whose greedy answer is wrong can still rank the right candidate above the
others, which counting cannot use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from arctax.data.augment import Augmentation
from arctax.data.collate import collate
from arctax.data.tokenize import BOS, IGNORE_INDEX, PAD, SEP

Grid = np.ndarray
Pair = tuple[Grid, Grid]


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over answer tokens of ``log p(label)`` per sample ``(B,)``, with the tokens that can
    never be part of an answer (``PAD``, ``SEP``, ``BOS``) excluded as greedy decoding does."""
    logits = logits.float().clone()
    logits[..., [PAD, SEP, BOS]] = float("-inf")
    logp = torch.log_softmax(logits, -1)
    mask = labels != IGNORE_INDEX
    tok = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return (tok * mask).sum(-1)


@torch.no_grad()
def score_candidates(
    model: nn.Module,
    k: int,
    query: Grid,
    context: Sequence[Pair],
    candidates: Sequence[Grid],
    views: Sequence[Augmentation],
    batch_size: int = 64,
) -> np.ndarray:
    """Mean over ``views`` of each candidate's log-probability as the answer to ``query``.

    Every candidate, query and context pair is seen through the same view; a candidate the
    model cannot emit under the answer format still gets a finite (very low) score.
    """
    if not candidates:
        return np.zeros(0)
    dev = next(model.parameters()).device
    examples = [
        {"query_in": v.apply(query), "query_out": v.apply(c), "task_idx": 0, "example_idx": 0,
         "context": [(v.apply(a), v.apply(b)) for a, b in context]}
        for v in views for c in candidates
    ]  # fmt: skip
    out = []
    for start in range(0, len(examples), batch_size):
        b = {n: t.to(dev) for n, t in collate(examples[start : start + batch_size],
                                               model.fmt, k).items()}  # fmt: skip
        out.append(sequence_logprob(model(b), b["labels"]).cpu())
    scores = torch.cat(out).view(len(views), len(candidates)).double()
    return scores.mean(0).numpy()


def rank_by_score(candidates: Sequence[Grid], scores: np.ndarray, top: int) -> list[Grid]:
    """The ``top`` candidates by score, ties to the earlier candidate (a stable order)."""
    order = sorted(range(len(candidates)), key=lambda i: (-float(scores[i]), i))
    return [candidates[i] for i in order[:top]]
