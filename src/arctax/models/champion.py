"""The champion (Trial 69): encoder-decoder with Grid2D positions and a task-context encoder.

On top of :class:`EncoderDecoder` it adds
- Grid2D positional encoding from each token's real (row, col) on source and target, so
  every sample keeps its own grid shape inside a batch (bug 5 of the original used the first
  sample's shape for all);
- a context encoder over the K demonstration pairs of the same task (d_model 32): colour +
  Grid2D + input/output type embeddings, one self-attention layer per grid, output-to-input
  cross-attention, masked mean pooling per pair, then attention pooling over the valid pairs;
- a bridge ``LayerNorm(ReLU(Linear([decoder state, context])))`` added before EVERY decoder
  layer, as in the original Trial 69 weights.
"""

from __future__ import annotations

import torch
from torch import nn

from arctax.models.encoder_decoder import Batch, EncoderDecoder, Grid2DPositions
from arctax.models.grid2d_pe import Grid2DPE
from arctax.models.layers import Attention, Block


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x (..., C, d)`` over positions where ``mask (..., C)`` is True (0 if none)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(-2) / m.sum(-2).clamp(min=1.0)


class ContextEncoder(nn.Module):
    """K demonstration pairs -> one context vector per sample."""

    def __init__(self, d: int, n_heads: int, vocab_size: int, max_grid: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d)
        self.type_embed = nn.Embedding(2, d)  # 0 = input grid, 1 = output grid
        self.pe = Grid2DPE(d, max_grid)
        self.block = Block(d, n_heads, 4 * d)
        self.cross = Attention(d, n_heads)
        self.cross_ln = nn.LayerNorm(d)
        self.attn_proj = nn.Linear(d, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        ctx, mask, pair_mask = batch["ctx"], batch["ctx_mask"], batch["ctx_pair_mask"]
        b, k, _, c = ctx.shape
        side = torch.arange(2, device=ctx.device)[None, None, :, None]
        x = self.embed(ctx) + self.pe(batch["ctx_pos"]) + self.type_embed(side)
        x = x.view(b * k * 2, c, -1)
        m = mask.reshape(b * k * 2, c)
        safe = m | ~m.any(-1, keepdim=True)  # an absent grid attends to itself, then is dropped
        x = self.block(x, key_mask=safe).view(b * k, 2, c, -1)
        m = m.view(b * k, 2, c)
        safe = safe.view(b * k, 2, c)
        out = x[:, 1] + self.cross(self.cross_ln(x[:, 1]), mem=x[:, 0], key_mask=safe[:, 0])
        pairs = masked_mean(out, m[:, 1]).view(b, k, -1)
        score = self.attn_proj(pairs).squeeze(-1).masked_fill(~pair_mask, float("-inf"))
        w = torch.softmax(score, dim=-1).nan_to_num(0.0)  # no valid pair -> zero context
        return (w.unsqueeze(-1) * pairs).sum(1)


class Bridge(nn.Module):
    """Mix the context vector into a decoder state: LayerNorm(ReLU(Linear([h, c])))."""

    def __init__(self, d: int, d_ctx: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d + d_ctx, d)
        self.ln = nn.LayerNorm(d)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c[:, None, :].expand(-1, h.shape[1], -1)
        return self.ln(torch.relu(self.proj(torch.cat([h, c], dim=-1))))


class Champion(Grid2DPositions, EncoderDecoder):
    """Trial 69 architecture."""

    fmt = "champion"

    def __init__(self, *, context: dict, max_grid: int = 30, vocab_size: int = 15, **kw) -> None:
        if kw.get("positions", "grid2d") != "grid2d":
            raise ValueError(f"the champion's positions are grid2d, not {kw['positions']!r}")
        if kw.get("init", "torch") != "torch":  # its own code is not public: torch's init
            raise ValueError(f"the champion's init is torch, not {kw['init']!r}")
        super().__init__(max_grid=max_grid, vocab_size=vocab_size, **kw)
        d = self.embed.embedding_dim
        dc = context["d_model"]
        self.context_encoder = ContextEncoder(dc, context["n_heads"], vocab_size, max_grid)
        self.bridges = nn.ModuleList(Bridge(d, dc) for _ in self.decoder)

    def task_context(self, batch: Batch) -> torch.Tensor:
        return self.context_encoder(batch)

    def mix_context(self, layer: int, y: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        return y + self.bridges[layer](y, ctx)
