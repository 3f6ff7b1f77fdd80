"""Shared transformer pieces: attention (with a key/value cache), MLP, pre-norm block.

All attention goes through ``F.scaled_dot_product_attention``. Key-padding masks are boolean
``(B, S)`` (True = real token) broadcast to ``(B, 1, 1, S)``; causal self-attention uses
``is_causal=True`` with no explicit mask where right padding makes that safe (a real token
never sits after a pad), which keeps the fused kernels usable. Where this torch's fused CPU
kernel refuses the CPU it runs on (bf16 on an AMX/avx512-bf16 CPU whose kernels are held below
avx512 by ``ATEN_CPU_CAPABILITY``: "pack_vnni2 is only supported when avx512 is supported"), the
process falls back to the math kernel for that device and dtype: same result, slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

_MATH_ONLY: set[tuple[str, torch.dtype]] = set()  # (device, dtype) whose fused kernel refused


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, on the math kernel where the fused CPU one refuses."""
    dev = q.device.type
    if dev != "cpu":  # only torch's CPU kernels refuse; meta/cuda/mps go straight through
        return F.scaled_dot_product_attention(q, k, v, **kw)
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else q.dtype
    if (dev, dtype) not in _MATH_ONLY:
        try:
            return F.scaled_dot_product_attention(q, k, v, **kw)
        except RuntimeError as err:  # a torch kernel-selection bug, not bad input
            if "only supported when avx512" not in str(err):
                raise
            _MATH_ONLY.add((dev, dtype))
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, **kw)


@dataclass
class KVCache:
    """Keys/values of one self-attention layer, grown as tokens are decoded."""

    capacity: int = 64
    k: torch.Tensor | None = None  # (B, H, capacity, hd)
    v: torch.Tensor | None = None
    length: int = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v (B, H, n, hd)`` after the cached ones; return all keys/values so far."""
        n = k.shape[2]
        if self.k is None:
            b, h, _, hd = k.shape
            cap = max(self.capacity, n)
            self.k, self.v = k.new_zeros(b, h, cap, hd), v.new_zeros(b, h, cap, hd)
        if self.length + n > self.k.shape[2]:  # grow geometrically: amortised O(1) per token
            b, h, cap, hd = self.k.shape
            pad = self.k.new_zeros(b, h, max(cap, n), hd)
            self.k, self.v = torch.cat([self.k, pad], 2), torch.cat([self.v, pad], 2)
        self.k[:, :, self.length : self.length + n] = k
        self.v[:, :, self.length : self.length + n] = v
        self.length += n
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


class Attention(nn.Module):
    """Multi-head attention; self-attention when ``mem`` is None, else cross-attention."""

    def __init__(self, d: int, n_heads: int, dropout: float = 0.0, d_mem: int | None = None):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"d_model {d} is not divisible by n_heads {n_heads}")
        self.h = n_heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d_mem or d, 2 * d)
        self.out = nn.Linear(d, d)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.h, d // self.h).transpose(1, 2)

    def memory_kv(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of a cross-attention memory (computed once when decoding)."""
        k, v = self.kv(mem).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(
        self,
        x: torch.Tensor,
        mem: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        mem_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        q = self._heads(self.q(x))
        if mem_kv is not None:
            k, v = mem_kv
        else:
            k, v = self.memory_kv(x if mem is None else mem)
            if cache is not None:
                k, v = cache.append(k, v)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal and mask is None,
        )
        b, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    """Position-wise feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, d: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP."""

    def __init__(
        self,
        d: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        cross: bool = False,
        d_mem: int | None = None,
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, n_heads, dropout)
        self.cross = Attention(d, n_heads, dropout, d_mem) if cross else None
        self.ln_cross = nn.LayerNorm(d) if cross else None
        self.ln2 = nn.LayerNorm(d)
        self.mlp = MLP(d, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
        mem: torch.Tensor | None = None,
        mem_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mem_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), key_mask=key_mask, causal=causal, cache=cache))
        if self.cross is not None:
            h = self.ln_cross(x)
            x = x + self.drop(self.cross(h, mem=mem, key_mask=mem_mask, mem_kv=mem_kv))
        return x + self.mlp(self.ln2(x))


class LookupTable(nn.Module):
    """The original's "PermInvariantEmbedding" (the paper's Exp 2, "+PermInv"), as it ran.

    A plain ``(vocab, d)`` table ``G`` read as ``G[idx]``, no padding row, initialised
    ``nn.init.kaiming_uniform_(G, a=a)``: the original's ``a = sqrt(5)`` (bound ``1 / sqrt(d)``,
    ``table_init: kaiming_a_sqrt5``), or ``a = 0`` (bound ``sqrt(6 / d)``, 2.45x larger:
    ``table_init: kaiming_a0``, what arctax's ``perminv`` had before). Despite its name it is
    NOT colour-permutation invariant or equivariant: every colour has its own free row, as in
    ``nn.Embedding``; the two differ in their initialisation alone (``nn.Embedding`` draws
    N(0, 1)). The weight is called ``weight`` like ``nn.Embedding``'s.
    """

    def __init__(self, vocab_size: int, d: int, a: float = math.sqrt(5)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, d))
        nn.init.kaiming_uniform_(self.weight, a=a)

    @property
    def embedding_dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.weight[idx]


EMBEDDINGS = ("lookup", "perminv_table")
TABLE_INITS = {"kaiming_a_sqrt5": math.sqrt(5), "kaiming_a0": 0.0}  # the table's Kaiming ``a``


def token_embedding(
    kind: str, vocab_size: int, d: int, table_init: str = "kaiming_a_sqrt5"
) -> nn.Module:
    """The token embedding ``kind`` names: ``lookup`` (``nn.Embedding``, N(0, 1) init) or
    ``perminv_table`` (:class:`LookupTable`, the paper's "+PermInv" as it ran, initialised as
    ``table_init`` says: one of :data:`TABLE_INITS`)."""
    if table_init not in TABLE_INITS:
        raise ValueError(f"table_init {table_init!r} is not one of {', '.join(TABLE_INITS)}")
    if kind == "lookup":
        return nn.Embedding(vocab_size, d)
    if kind == "perminv_table":
        return LookupTable(vocab_size, d, TABLE_INITS[table_init])
    raise ValueError(f"embedding {kind!r} is not one of {', '.join(EMBEDDINGS)}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
