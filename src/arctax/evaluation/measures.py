"""Two teacher-forced measurements from ONE pass: ours, and the paper's as its code made it.

Both read the argmax of each answer token given the true prefix (teacher forcing); neither is a
generated answer (bug 6 of the original called it "grid accuracy").

- **Ours** (``tf_grid_correct``, ``tf_token_acc``): every token the model is scored on, the
  row-end and end-of-grid markers and the first cell included: a grid is right only when its
  shape and every cell are. Token accuracy counts the markers too (a 2x2 grid with all four
  cells wrong and its three markers right scores 3 / 7 = 42.9%), so it is not cell accuracy.
- **As the paper's code measured it** (``paper_*``; its Exp 0 / Exp 1 Lightning modules and
  ``compute_grid_accuracy``, read for facts): output cells only (no markers: their grids had
  none), the first cell given and not scored (they fed ``tgt[:, :-1]`` and scored
  ``tgt[:, 1:]``; here: a label whose decoder input is ``BOS``), padding ignored, a grid right
  when every scored cell is right and it has one at least (a 1x1 output never is), cell
  accuracy pooled over cells (right cells / scored cells). It never asks for the grid's shape,
  so it is the more lenient of the two. For a decoder-only model with ``loss_over:
  "sequence"`` the labels are the whole sequence's (:func:`scored_labels`): their other
  measurement, input cells included.

Torch only; the training module logs both, evaluation writes both per query.
"""

from __future__ import annotations

from typing import Any

import torch

from arctax.data.tokenize import BOS, N_COLOURS

Batch = dict[str, torch.Tensor]


def scored_labels(model: Any, batch: Batch) -> torch.Tensor:
    """The labels a model is trained and scored on: its ``loss_labels(batch)`` where it has one
    (the decoder-only's ``loss_over``), else ``batch["labels"]``."""
    hook = getattr(model, "loss_labels", None)
    return hook(batch) if callable(hook) else batch["labels"]


def decoder_inputs(batch: Batch) -> torch.Tensor:
    """The tokens the decoder reads, aligned with the labels (``tgt_in`` or ``seq``)."""
    return batch["tgt_in"] if "tgt_in" in batch else batch["seq"]


def paper_counts(
    pred: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per sample ``(B,)``: ``cells`` scored, ``right`` cells among them, ``grid`` (every scored
    cell right, one at least), as the paper's code measured (module docstring). ``pred`` is the
    argmax ``(B, T)``, ``inputs`` the decoder's input tokens."""
    scored = (labels >= 0) & (labels < N_COLOURS) & (inputs != BOS)
    right = (pred == labels) & scored
    cells, n_right = scored.sum(1), right.sum(1)
    return {"cells": cells, "right": n_right, "grid": (n_right == cells) & (cells > 0)}


def ours(pred: torch.Tensor, labels: torch.Tensor, ignore: int) -> dict[str, torch.Tensor]:
    """Per sample ``(B,)``: ``tokens`` scored, ``right`` tokens, ``grid`` (every scored token
    right, one at least): our measurement, markers and first cell included."""
    mask = labels != ignore
    right = (pred == labels) & mask
    tokens = mask.sum(1)
    return {"tokens": tokens, "right": right.sum(1), "grid": (right | ~mask).all(1) & (tokens > 0)}
