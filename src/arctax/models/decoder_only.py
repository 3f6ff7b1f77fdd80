"""Decoder-only baseline ("Exp -1"): a GPT over ``[input] SEP [output]``.

Pre-norm, GELU, tied input/output embeddings, truly causal self-attention (the original fed
its own sequence as cross-attention memory, so every position saw the future: bug 1), and a
positional encoding (the original had none: bug 2). We use 1D sinusoidal positions over the
sequence index: it is the ablation baseline, so it gets the plainest standard encoding and
no grid structure; the encoder-decoder adds an encoder, the champion adds Grid2D and context.

``loss_over: "output"`` (ours) trains and scores the output tokens only, as for the
encoder-decoders. ``loss_over: "sequence"`` is the original's other measurement
(``baseline_decoder_only_lightning.py``, read for facts): loss and accuracy over the whole
``[input] SEP [output]`` sequence, every token after the first one scored (the input's too;
their SEP was the pad token, so never a target): :meth:`DecoderOnly.loss_labels`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from arctax.data.tokenize import IGNORE_INDEX, PAD, VOCAB_SIZE
from arctax.models.grid2d_pe import SinusoidalPE1D
from arctax.models.layers import Block, KVCache

Batch = dict[str, torch.Tensor]
LOSS_OVER = ("output", "sequence")


class DecoderOnly(nn.Module):
    """GPT-style causal decoder with tied embeddings."""

    fmt = "decoder_only"

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ff: int,
        dropout: float = 0.1,
        vocab_size: int = VOCAB_SIZE,
        max_grid: int = 30,
        loss_over: str = "output",
    ) -> None:
        super().__init__()
        if loss_over not in LOSS_OVER:
            raise ValueError(f"loss_over {loss_over!r} is not one of {', '.join(LOSS_OVER)}")
        self.loss_over = loss_over
        max_len = 2 * (max_grid * (max_grid + 1) + 1)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pe = SinusoidalPE1D(d_model, max_len + 1)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.logit_scale = d_model**-0.5

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        # Tied weights, scaled by d_model**-0.5 (as T5 does with tied embeddings): the embedding
        # is N(0, 1) to sit level with the unit-amplitude sinusoidal positions, so unscaled
        # logits would start with std ~sqrt(d_model) and a loss of ~20 instead of ~ln(vocab),
        # handicapping this ablation against the models with a separate output head.
        return self.ln_f(x) @ self.embed.weight.T * self.logit_scale

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits ``(B, L, V)``: position ``i`` predicts ``labels[i]`` (the token after ``seq[i]``)."""
        seq = batch["seq"]
        x = self.drop(self.embed(seq) + self.pe(torch.arange(seq.shape[1], device=seq.device)))
        for blk in self.blocks:
            x = blk(x, causal=True)  # right padding: a real token never follows a pad
        return self._logits(x)

    def loss_labels(self, batch: Batch) -> torch.Tensor:
        """The labels training and teacher-forced scores cover: ``batch["labels"]`` (the output),
        or with ``loss_over: "sequence"`` also the input tokens after the first (position ``i``
        predicts ``seq[i + 1]``; the SEP is never a target)."""
        labels = batch["labels"]
        if self.loss_over == "output":
            return labels
        seq = batch["seq"]
        nxt = torch.cat([seq[:, 1:], torch.full_like(seq[:, :1], IGNORE_INDEX)], dim=1)
        idx = torch.arange(seq.shape[1], device=seq.device)
        inp = idx[None, :] < (batch["prompt_len"] - 2)[:, None]  # input tokens 1..n-1
        return torch.where(inp, nxt, labels)

    def start(self, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        """Run the prompts (``[input] SEP``, lengths differ per sample) and fill the cache."""
        p = int(batch["prompt_len"].max())
        plen = batch["prompt_len"].to(batch["seq"].device)  # (a memory estimate keeps it on CPU)
        idx = torch.arange(p, device=plen.device)
        real = idx[None, :] < plen[:, None]
        prompt = torch.where(real, batch["seq"][:, :p], PAD)
        caches = [KVCache(capacity=2 * p) for _ in self.blocks]
        x = self.embed(prompt) + self.pe(idx)
        for blk, c in zip(self.blocks, caches, strict=True):
            x = blk(x, causal=True, cache=c)
        last = x[torch.arange(x.shape[0], device=x.device), plen - 1]
        # cached pad slots of shorter prompts stay masked; each sample keeps its own positions
        cache = {"self": caches, "key_mask": real, "next": plen.clone()}
        return self._logits(last), cache

    def step(self, cache: dict[str, Any], token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Feed one token per sample at its own next index; ``pos`` is unused (1D model)."""
        x = self.embed(token[:, None]) + self.pe(cache["next"])[:, None]
        ones = torch.ones_like(cache["key_mask"][:, :1])
        cache["key_mask"] = torch.cat([cache["key_mask"], ones], 1)
        for blk, c in zip(self.blocks, cache["self"], strict=True):
            x = blk(x, key_mask=cache["key_mask"], cache=c)
        cache["next"] = cache["next"] + 1
        return self._logits(x)[:, 0]
