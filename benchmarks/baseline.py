"""The straightforward reference the benchmark measures us against.

What a first version of the encoder-decoder would look like: ``nn.Transformer`` (post-norm,
``nn.MultiheadAttention``, an explicit ``(T, T)`` causal mask) with the same d_model / layers /
d_ff as ``models.encoder_decoder``, trained on random batches padded to their longest sample.
It reads the same ``seq2seq`` batches as :class:`arctax.models.encoder_decoder.EncoderDecoder`
so the two are timed on identical examples.
"""

from __future__ import annotations

import torch
from torch import nn

from arctax.data.tokenize import VOCAB_SIZE
from arctax.models.grid2d_pe import sinusoid_table

Batch = dict[str, torch.Tensor]


class BaselineTransformer(nn.Module):
    """``nn.Transformer`` encoder-decoder over ``seq2seq`` batches; logits ``(B, T, V)``."""

    fmt = "seq2seq"

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_encoder_layers: int,
        n_decoder_layers: int,
        d_ff: int,
        dropout: float = 0.1,
        vocab_size: int = VOCAB_SIZE,
        max_grid: int = 30,
        **_: object,  # other keys of the encoder_decoder block (e.g. per-side dropouts)
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.register_buffer("pe", sinusoid_table(max_grid * (max_grid + 1) + 2, d_model), False)
        self.transformer = nn.Transformer(
            d_model,
            n_heads,
            n_encoder_layers,
            n_decoder_layers,
            d_ff,
            dropout,
            batch_first=True,
            norm_first=False,  # post-norm, the nn.Transformer default
        )
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Teacher-forced logits aligned with ``batch["labels"]``."""
        src, tgt = batch["src"], batch["tgt_in"]
        t = tgt.shape[1]
        # boolean like the padding masks (True = may not attend): mixing a float causal mask
        # with boolean padding masks is deprecated in nn.MultiheadAttention
        causal = torch.ones(t, t, dtype=torch.bool, device=tgt.device).triu(1)
        h = self.transformer(
            self.embed(src) + self.pe[: src.shape[1]],
            self.embed(tgt) + self.pe[: tgt.shape[1]],
            tgt_mask=causal,
            tgt_is_causal=True,  # what nn.Transformer would detect by comparing the mask
            src_key_padding_mask=~batch["src_mask"],
            tgt_key_padding_mask=~batch["tgt_mask"],
            memory_key_padding_mask=~batch["src_mask"],
        )
        return self.head(h)
