"""Batches: one padded tensor dict per model format, built from grid examples.

An *example* is a dict with numpy grids ``query_in``, ``query_out``, ``context`` (a list of
``(input, output)`` grid pairs, at most K), and integer ``task_idx`` / ``example_idx``.

Batch keys (``B`` batch, ``S`` source, ``T`` target, ``L`` decoder-only sequence,
``K`` context pairs, ``C`` context cells; masks are ``True`` on real tokens):

- every format: ``labels`` (next-token targets, ``IGNORE_INDEX`` where no loss),
  ``task_idx (B,)``, ``example_idx (B,)``;
- ``seq2seq`` (encoder_decoder) and ``champion``: ``src (B,S)``, ``src_pos (B,S,2)``,
  ``src_mask (B,S)``, ``tgt_in (B,T)``, ``tgt_pos (B,T,2)``, ``tgt_mask (B,T)``, ``labels (B,T)``;
- ``champion`` adds ``ctx (B,K,2,C)`` (pair k, 0 = input / 1 = output), ``ctx_pos (B,K,2,C,2)``,
  ``ctx_mask (B,K,2,C)`` and ``ctx_pair_mask (B,K)``;
- ``decoder_only``: ``seq (B,L)``, ``seq_mask (B,L)``, ``labels (B,L)``, ``prompt_len (B,)``.

Padding is on the right with ``PAD`` (labels ``IGNORE_INDEX``), so each sample keeps its own
shape and a model that masks correctly gives the same logits whatever its batch-mates are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from arctax.data.tokenize import (
    IGNORE_INDEX,
    PAD,
    encode_cells,
    format_decoder_only,
    format_seq2seq,
)

FORMATS = ("seq2seq", "champion", "decoder_only")
MODEL_FORMAT = {
    "champion": "champion",
    "encoder_decoder": "seq2seq",
    "decoder_only": "decoder_only",
}

Batch = dict[str, torch.Tensor]


def _pad(arrays: Sequence[np.ndarray], value: int) -> np.ndarray:
    """Right-pad 1D (or (L, d)) arrays to a common length."""
    n = max(len(a) for a in arrays)
    out = np.full((len(arrays), n, *arrays[0].shape[1:]), value, dtype=np.int64)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def _mask(arrays: Sequence[np.ndarray]) -> np.ndarray:
    n = max(len(a) for a in arrays)
    return np.arange(n)[None, :] < np.array([len(a) for a in arrays])[:, None]


def collate(examples: Sequence[dict[str, Any]], fmt: str, k: int = 2) -> Batch:
    """Pad a list of examples into the batch of format ``fmt`` (see module docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown batch format {fmt!r}; expected one of {FORMATS}")
    b: dict[str, np.ndarray] = {
        "task_idx": np.array([e["task_idx"] for e in examples], dtype=np.int64),
        "example_idx": np.array([e["example_idx"] for e in examples], dtype=np.int64),
    }
    if fmt == "decoder_only":
        items = [format_decoder_only(e["query_in"], e["query_out"]) for e in examples]
        seqs = [it["seq"] for it in items]
        b["seq"] = _pad(seqs, PAD)
        b["seq_mask"] = _mask(seqs)
        b["labels"] = _pad([it["labels"] for it in items], IGNORE_INDEX)
        b["prompt_len"] = np.array([it["prompt_len"] for it in items], dtype=np.int64)
    else:
        items = [format_seq2seq(e["query_in"], e["query_out"]) for e in examples]
        src = [it["src"] for it in items]
        tgt = [it["tgt_in"] for it in items]
        b["src"] = _pad(src, PAD)
        b["src_pos"] = _pad([it["src_pos"] for it in items], 0)
        b["src_mask"] = _mask(src)
        b["tgt_in"] = _pad(tgt, PAD)
        b["tgt_pos"] = _pad([it["tgt_pos"] for it in items], 0)
        b["tgt_mask"] = _mask(tgt)
        b["labels"] = _pad([it["labels"] for it in items], IGNORE_INDEX)
        if fmt == "champion":
            b.update(_collate_context(examples, k))
    return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in b.items()}


def _collate_context(examples: Sequence[dict[str, Any]], k: int) -> dict[str, np.ndarray]:
    """Context pairs as cells only; missing pairs are all-PAD with ``ctx_pair_mask`` False."""
    cells = [[encode_cells(g) for pair in e["context"][:k] for g in pair] for e in examples]
    c = max((len(t) for row in cells for t, _ in row), default=1)
    n = len(examples)
    ctx = np.full((n, k, 2, c), PAD, dtype=np.int64)
    pos = np.zeros((n, k, 2, c, 2), dtype=np.int64)
    mask = np.zeros((n, k, 2, c), dtype=bool)
    pair_mask = np.zeros((n, k), dtype=bool)
    for i, row in enumerate(cells):
        for j, (tok, p) in enumerate(row):
            kk, side = divmod(j, 2)
            ctx[i, kk, side, : len(tok)] = tok
            pos[i, kk, side, : len(tok)] = p
            mask[i, kk, side, : len(tok)] = True
            pair_mask[i, kk] = True
    return {"ctx": ctx, "ctx_pos": pos, "ctx_mask": mask, "ctx_pair_mask": pair_mask}
