"""Initialisations a model can ask for by name (``init``): torch's own, or the original's.

``xavier``: what the original's Exp 0 / 1 / 2 modules did after building themselves
(``encoder_decoder_baseline.py``, ``ed_with_grid2d_pe.py``, ``ed_with_grid2d_pe_and_perminv.py``,
read for facts): ``xavier_uniform_`` on every parameter of two or more dimensions, the token
embedding included, except a ``perminv_table`` (their Exp 2 skipped its table, which keeps its
own Kaiming-uniform init). Their layers were ``nn.TransformerEncoderLayer`` /
``nn.TransformerDecoderLayer``, whose attention keeps the query, key and value projections in
ONE ``(3d, d)`` matrix: Xavier's bound over it is ``sqrt(6 / 4d)``, smaller than over three
separate ``(d, d)`` ones, and its biases start at zero. :func:`xavier_` gives our separate
projections that bound and those zeros, so the attention starts as theirs did.
"""

from __future__ import annotations

import math

from torch import nn

from arctax.models.layers import Attention, LookupTable

INITS = ("torch", "xavier")


def xavier_(model: nn.Module) -> None:
    """The original's initialisation, in place (see the module docstring)."""
    done: set[int] = set()
    for m in model.modules():
        if isinstance(m, LookupTable):
            done.add(id(m.weight))  # their Exp 2: the table keeps its own initialisation
        if isinstance(m, Attention) and m.kv.in_features == m.q.in_features:
            fan_in, fan_out = m.q.in_features, m.q.out_features + m.kv.out_features
            bound = math.sqrt(6.0 / (fan_in + fan_out))  # one fused (3d, d) in_proj
            for w in (m.q.weight, m.kv.weight):
                nn.init.uniform_(w, -bound, bound)
                done.add(id(w))
            for b in (m.q.bias, m.kv.bias, m.out.bias):
                nn.init.zeros_(b)  # nn.MultiheadAttention's in_proj_bias and out_proj.bias
    for p in model.parameters():
        if p.dim() >= 2 and id(p) not in done:
            nn.init.xavier_uniform_(p)


def initialise(model: nn.Module, init: str) -> None:
    """Apply the initialisation ``init`` names (``torch``: leave torch's own)."""
    if init not in INITS:
        raise ValueError(f"init {init!r} is not one of {', '.join(INITS)}")
    if init == "xavier":
        xavier_(model)
