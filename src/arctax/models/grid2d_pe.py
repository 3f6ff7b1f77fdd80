"""Fixed sinusoidal positional encodings: 1D over a sequence index, 2D over real (row, col).

Grid2D gives half of the channels to the row and half to the column of each token, looked up
from the token's real coordinates (``pos[..., 0]``, ``pos[..., 1]``) — never from its flat
index, which would put cell (1, 0) of a 3x3 grid at (0, 3) (bug 3 of the original).
:func:`flat_positions` makes that bug on purpose, for the ladder as the original ran it
(``positions: grid2d_flat``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid_table(n: int, d: int) -> torch.Tensor:
    """``(n, d)`` table: ``sin`` on even channels, ``cos`` on odd ones (Vaswani et al.)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return table


class SinusoidalPE1D(nn.Module):
    """1D sinusoidal encoding of integer positions ``(…,)`` -> ``(…, d)``."""

    def __init__(self, d: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoid_table(max_len, d), persistent=False)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table[index]


class Grid2DPE(nn.Module):
    """2D sinusoidal encoding of real coordinates ``pos (…, 2)`` -> ``(…, d)``."""

    def __init__(self, d: int, max_grid: int = 30) -> None:
        super().__init__()
        if d % 4:
            raise ValueError(f"Grid2D PE needs d_model divisible by 4, got {d}")
        # rows and columns run 0..max_grid: markers sit one past the last cell
        self.register_buffer("table", sinusoid_table(max_grid + 1, d // 2), persistent=False)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        # only a malformed generated answer (a row longer than max_grid) goes past the table:
        # it saturates there instead of crashing the decoder; real grids never reach it
        pos = pos.clamp(max=self.table.shape[0] - 1)
        return torch.cat([self.table[pos[..., 0]], self.table[pos[..., 1]]], dim=-1)


def grid_width(pos: torch.Tensor) -> torch.Tensor:
    """Each sample's grid width from its tokens' real coordinates ``pos (B, T, 2)``: the largest
    column on row 0 (the first row's end marker sits at column W). Known from the prefix once
    row 0 has ended, and :func:`flat_positions` needs it only after that."""
    return torch.where(pos[..., 0] == 0, pos[..., 1], 0).amax(-1)


def flat_positions(pos: torch.Tensor, width: torch.Tensor, table_width: int) -> torch.Tensor:
    """Bug 3 of the original, on purpose: the coordinate its Grid2D table gave a token.

    Their grids were flattened row-major (cells only) and the i-th token got entry i of a
    ``table_width``-wide table: ``(i // table_width, i % table_width)``. A token's index among
    its grid's cells is ``row * width + col``, so cell (1, 0) of a 3x3 grid (index 3) gets
    (0, 3). ``pos (B, T, 2)`` real coordinates, ``width (B,)``; the markers (end of row at
    ``(r, W)``, end of grid at ``(H, 0)``) follow the same formula. Returns ``(B, T, 2)``.
    """
    flat = pos[..., 0] * width[:, None] + pos[..., 1]
    return torch.stack([flat // table_width, flat % table_width], dim=-1)
