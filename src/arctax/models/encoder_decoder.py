"""Encoder-decoder ("Exp 0"): encoder over the input grid, causal decoder over the output grid.

1D sinusoidal positions over each sequence's index (``positions: "1d"``), Grid2D positions
from each token's real (row, col) (``positions: "grid2d"``: the paper's "+Grid2D", Exp 1), or
Grid2D positions from the flat index against a ``max_grid``-wide table (``positions:
"grid2d_flat"``: bug 3 of the original on purpose, as its Exp 1 / 2 ran:
:func:`arctax.models.grid2d_pe.flat_positions`); token embedding ``nn.Embedding``
(``embedding: "lookup"``) or the original's plain Kaiming-uniform table (``embedding:
"perminv_table"``, initialised as ``table_init`` says: the paper's "+PermInv", Exp 2, which
is not colour-permutation invariant: :class:`arctax.models.layers.LookupTable`), optionally
scaled by ``sqrt(d_model)`` (``embed_scale``, as the paper's Exp 0, 1 and 2 ran); weights
initialised by torch (``init: "torch"``) or as the original did (``init: "xavier"``:
:mod:`arctax.models.initialisation`). The target is shifted by the batch
(``tgt_in = [BOS] + out[:-1]``), so the decoder never sees the token it predicts (bug 4 of
the original). Decoding with a key/value cache lives here once for every subclass.

Its hooks are the public way to build a variant (the champion, or a model of your own:
docs/MODELS.md): ``init_positions`` (the positional encoding), ``embed_source`` /
``embed_target`` (token + position embeddings), ``task_context`` (a vector per sample from
the batch, e.g. its demonstrations) and ``mix_context`` (how it enters decoder layer ``i``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from arctax.data.tokenize import BOS, VOCAB_SIZE
from arctax.models.grid2d_pe import Grid2DPE, SinusoidalPE1D, flat_positions, grid_width
from arctax.models.initialisation import initialise
from arctax.models.layers import Block, KVCache, token_embedding

Batch = dict[str, torch.Tensor]
POSITIONS = ("1d", "grid2d", "grid2d_flat")


class EncoderDecoder(nn.Module):
    """Pre-norm transformer encoder-decoder over marker-format grids."""

    fmt = "seq2seq"

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_encoder_layers: int,
        n_decoder_layers: int,
        d_ff: int,
        dropout: float = 0.1,
        encoder_dropout: float | None = None,
        decoder_dropout: float | None = None,
        vocab_size: int = VOCAB_SIZE,
        max_grid: int = 30,
        d_mem: int | None = None,
        positions: str = "1d",
        embedding: str = "lookup",
        embed_scale: bool = False,
        init: str = "torch",
        table_init: str = "kaiming_a_sqrt5",
    ) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions {positions!r} is not one of {', '.join(POSITIONS)}")
        self.positions = positions
        self.max_grid = max_grid
        self.embed_scale = math.sqrt(d_model) if embed_scale else 1.0
        enc_p = dropout if encoder_dropout is None else encoder_dropout
        dec_p = dropout if decoder_dropout is None else decoder_dropout
        self.max_len = max_grid * (max_grid + 1) + 1
        self.embed = token_embedding(embedding, vocab_size, d_model, table_init)
        self.encoder = nn.ModuleList(
            Block(d_model, n_heads, d_ff, enc_p) for _ in range(n_encoder_layers)
        )
        self.enc_ln = nn.LayerNorm(d_model)
        self.decoder = nn.ModuleList(
            Block(d_model, n_heads, d_ff, dec_p, cross=True) for _ in range(n_decoder_layers)
        )
        self.dec_ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.drop = nn.Dropout(dec_p)
        self.init_positions(d_model, max_grid)
        initialise(self, init)

    # ---- hooks a variant overrides (the champion; docs/MODELS.md) -------------------------
    def init_positions(self, d_model: int, max_grid: int) -> None:
        if self.positions in ("grid2d", "grid2d_flat"):
            self.pe = Grid2DPE(d_model, max_grid)
        else:
            self.pe = SinusoidalPE1D(d_model, self.max_len + 1)

    def tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings (times ``sqrt(d_model)`` with ``embed_scale``)."""
        x = self.embed(tokens)
        return x * self.embed_scale if self.embed_scale != 1.0 else x

    def embed_source(self, batch: Batch) -> torch.Tensor:
        pos = batch["src_pos"]
        if self.positions == "grid2d_flat":
            pos = flat_positions(pos, grid_width(pos), self.max_grid)
        if self.positions in ("grid2d", "grid2d_flat"):
            return self.tokens(batch["src"]) + self.pe(pos)
        idx = torch.arange(batch["src"].shape[1], device=batch["src"].device)
        return self.tokens(batch["src"]) + self.pe(idx)

    def embed_target(
        self,
        tokens: torch.Tensor,
        pos: torch.Tensor,
        index: torch.Tensor,
        width: torch.Tensor | None = None,
    ):
        """Decoder input: ``tokens (B,T)``, real coordinates ``pos (B,T,2)``, step ``index (T,)``
        (Grid2D: the coordinate of the token to predict); ``width (B,)``: the grid's width, for
        ``grid2d_flat`` (default: from ``pos``, the whole target's coordinates)."""
        if self.positions == "grid2d_flat":
            pos = flat_positions(pos, grid_width(pos) if width is None else width, self.max_grid)
        return self.tokens(tokens) + self.pe(index if self.positions == "1d" else pos)

    def task_context(self, batch: Batch) -> torch.Tensor | None:
        return None

    def mix_context(self, layer: int, y: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        return y

    # ---- training forward ---------------------------------------------------------------
    def encode(self, batch: Batch) -> torch.Tensor:
        """Encoder memory ``(B, S, d)``; pads are masked as keys."""
        x = self.drop(self.embed_source(batch))
        for blk in self.encoder:
            x = blk(x, key_mask=batch["src_mask"])
        return self.enc_ln(x)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Teacher-forced logits ``(B, T, V)`` aligned with ``batch["labels"]``."""
        mem = self.encode(batch)
        ctx = self.task_context(batch)
        t = batch["tgt_in"].shape[1]
        idx = torch.arange(t, device=mem.device)
        y = self.drop(self.embed_target(batch["tgt_in"], batch["tgt_pos"], idx))
        for i, blk in enumerate(self.decoder):
            y = self.mix_context(i, y, ctx)
            y = blk(y, causal=True, mem=mem, mem_mask=batch["src_mask"])
        return self.head(self.dec_ln(y))

    # ---- greedy decoding with a key/value cache -------------------------------------------
    def start(self, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        """Encode once; return logits of the first answer token and the decoding cache."""
        mem = self.encode(batch)
        b = mem.shape[0]
        cache: dict[str, Any] = {
            "ctx": self.task_context(batch),
            "mem_mask": batch["src_mask"],
            "mem_kv": [blk.cross.memory_kv(mem) for blk in self.decoder],
            "self": [KVCache() for _ in self.decoder],
            "t": 0,
            "width": torch.zeros(b, dtype=torch.long, device=mem.device),  # grid2d_flat
        }
        bos = torch.full((b,), BOS, dtype=torch.long, device=mem.device)
        pos = torch.zeros(b, 2, dtype=torch.long, device=mem.device)
        return self.step(cache, bos, pos), cache

    def step(self, cache: dict[str, Any], token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Feed one token per sample (``pos``: coordinate of the token to predict next)."""
        idx = torch.full((1,), cache["t"], dtype=torch.long, device=token.device)
        if self.positions == "grid2d_flat":  # the width, known once row 0 ended at (0, W)
            w = torch.where(pos[:, 0] == 0, pos[:, 1].maximum(cache["width"]), cache["width"])
            cache["width"] = w
            y = self.embed_target(token[:, None], pos[:, None], idx, w)
        else:  # a subclass's own embed_target (the hook) takes three arguments
            y = self.embed_target(token[:, None], pos[:, None], idx)
        for i, blk in enumerate(self.decoder):
            y = self.mix_context(i, y, cache["ctx"])
            y = blk(
                y, mem_mask=cache["mem_mask"], cache=cache["self"][i], mem_kv=cache["mem_kv"][i]
            )
        cache["t"] += 1
        return self.head(self.dec_ln(y))[:, 0]


class Grid2DPositions:
    """Grid2D positions for an :class:`EncoderDecoder` subclass, whatever its ``positions``
    argument (the champion's): the same as ``positions: "grid2d"``. A mixin, before the base
    class; the paper's "+Grid2D" is ``EncoderDecoder(positions="grid2d")``."""

    def init_positions(self, d_model: int, max_grid: int) -> None:
        self.positions = "grid2d"
        self.pe = Grid2DPE(d_model, max_grid)
