"""Shared transformer pieces: attention (with a key/value cache), MLP, pre-norm block.

All attention goes through ``F.scaled_dot_product_attention``. Key-padding masks are boolean
``(B, S)`` (True = real token) broadcast to ``(B, 1, 1, S)``; causal self-attention uses
``is_causal=True`` with no explicit mask where right padding makes that safe (a real token
never sits after a pad), which keeps the fused kernels usable.

On CUDA every call stays on a fused kernel (flash, memory-efficient or cuDNN; never the math
kernel, which saves the whole ``(B, H, T, S)`` attention matrix). PyTorch picks flash only
without a mask (and in fp16/bf16 on sm80+), the memory-efficient kernel only when the head
dim is a multiple of 8 in fp16/bf16 (4 in fp32 on sm80+), cuDNN only for a multiple of 8 and
never under deterministic algorithms (``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``).
Our head dims (168 / 4 = 42, the champion's context encoder 32 / 8 = 4) are not, so on CUDA
q, k and v are zero-padded to a multiple of 8 with the original scale ``1/sqrt(head_dim)``
passed explicitly, and the output sliced back (:func:`attention`): exact (the zero
columns add nothing to q.k and give output columns that are dropped), no parameter changes.
The CPU's fused kernel has no head-dim rule (only dropout and the dtype send it to math,
``sdp_utils_cpp.cpp``), so the CPU path is unchanged. Where this torch's fused CPU kernel
refuses the CPU it runs on (bf16 on an AMX/avx512-bf16 CPU whose kernels are held below
avx512 by ``ATEN_CPU_CAPABILITY``: "pack_vnni2 is only supported when avx512 is supported"),
the process falls back to the math kernel for that device and dtype: same result, slower.

:func:`watch_attention` records the kernel every call site runs (and refuses the math kernel
on CUDA: the smoke test and ``gpu-check`` run under it); :func:`fused_attention_estimate`
makes calls on the ``meta`` device run the fused op CUDA would, so the memory estimate
(:mod:`arctax.memory`) sees what a GPU saves.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

HEAD_DIM_MULTIPLE = 8  # the fused CUDA kernels' head-dim alignment in fp16/bf16
FUSED = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
BACKENDS = {SDPBackend.MATH: "math", SDPBackend.FLASH_ATTENTION: "flash",
            SDPBackend.EFFICIENT_ATTENTION: "efficient", SDPBackend.CUDNN_ATTENTION: "cudnn"}  # fmt: skip
_MATH_ONLY: set[tuple[str, torch.dtype]] = set()  # (device, dtype) whose fused kernel refused
_HERE = os.path.abspath(__file__)
_TORCH = os.path.dirname(os.path.abspath(torch.__file__))


class MathAttentionError(RuntimeError):
    """An attention call would run the math kernel where :func:`watch_attention` forbids it."""


@dataclass
class Site:
    """The attention calls of one call site: the kernels they ran, one call's shapes."""

    backends: set[str] = field(default_factory=set)
    shapes: str = ""
    calls: int = 0


@dataclass
class AttentionWatch:
    """What :func:`watch_attention` saw: per call site (``file:line function, kind``) its
    kernels, and every call's ``(B, H, T, S, head_dim, causal)`` (FLOPs as computed)."""

    forbid_math: tuple[str, ...]
    sites: dict[str, Site] = field(default_factory=dict)
    calls: list[tuple[int, int, int, int, int, bool]] = field(default_factory=list)


_WATCHES: list[AttentionWatch] = []
_ESTIMATE: list[bool] = []


@contextlib.contextmanager
def watch_attention(forbid_math: tuple[str, ...] = ("cuda",)) -> Iterator[AttentionWatch]:
    """Record the kernel of every attention call inside, by call site; on a device type of
    ``forbid_math`` a call that would run the math kernel raises :class:`MathAttentionError`
    naming its call site and shapes (the fused kernels only are allowed there)."""
    watch = AttentionWatch(tuple(forbid_math))
    _WATCHES.append(watch)
    try:
        yield watch
    finally:
        _WATCHES.remove(watch)


@contextlib.contextmanager
def fused_attention_estimate() -> Iterator[None]:
    """Inside, attention on the ``meta`` device runs the fused op CUDA would run (flash, or
    the memory-efficient kernel with a mask or in fp32), padded as on CUDA: what it saves for
    the backward is what a GPU saves, for :mod:`arctax.memory`. Elsewhere ``meta`` calls go
    straight to torch (its math kernel: FLOP counting)."""
    _ESTIMATE.append(True)
    try:
        yield
    finally:
        _ESTIMATE.pop()


def _call_site(kind: str) -> str:
    """``file:line function, kind`` of the model code that called attention."""
    f = sys._getframe(1)
    while f is not None and (
        os.path.abspath(f.f_code.co_filename) == _HERE
        or os.path.abspath(f.f_code.co_filename).startswith(_TORCH)
    ):
        f = f.f_back
    where = (
        "?" if f is None else f"{Path(f.f_code.co_filename).name}:{f.f_lineno} {f.f_code.co_name}"
    )
    return f"{where}, {kind}"


def _shapes(q, k, mask, dropout_p: float, is_causal: bool) -> str:
    m = "none" if mask is None else str(tuple(mask.shape))
    return (f"q {tuple(q.shape)} k {tuple(k.shape)} {str(q.dtype).removeprefix('torch.')}, "
            f"mask {m}, causal {is_causal}, dropout {dropout_p:g}")  # fmt: skip


def sdpa_backend(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None) -> str:
    """The kernel ``F.scaled_dot_product_attention`` picks for these arguments on their device
    (``torch._fused_sdp_choice``, which it calls itself), under autocast's dtype if on."""
    dev = q.device.type
    if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev) and q.dtype == torch.float32:
        dt = torch.get_autocast_dtype(dev)
        q, k, v = q.to(dt), k.to(dt), v.to(dt)
    choice = torch._fused_sdp_choice(q, k, v, attn_mask, dropout_p, is_causal, scale=scale)
    return BACKENDS.get(SDPBackend(choice), SDPBackend(choice).name.lower())


def _fused_meta(q, k, v, mask, dropout_p: float, is_causal: bool, scale: float) -> tuple:
    """The fused op CUDA runs, on ``meta``: ``(output, kernel name)``."""
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    square = q.shape[-2] == k.shape[-2]
    if mask is None and q.dtype in (torch.float16, torch.bfloat16) and (square or not is_causal):
        out = torch.ops.aten._scaled_dot_product_flash_attention(
            q, k, v, dropout_p, is_causal, False, scale=scale
        )
        return out[0], "flash"
    bias = None
    if mask is not None:  # SDPA turns a boolean mask into an additive one of q's dtype
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(
            ~mask, float("-inf")
        )
        bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, bias, grad, dropout_p, is_causal, scale=scale
    )
    return out[0], "efficient"


def _sdpa(q, k, v, attn_mask, dropout_p: float, is_causal: bool, scale, kind: str):
    """One attention call: on ``meta`` under an estimate the fused op, else torch's; recorded
    (and the math kernel refused where forbidden) under :func:`watch_attention`."""
    dev = q.device.type
    kw = {"attn_mask": attn_mask, "dropout_p": dropout_p, "is_causal": is_causal}
    if scale is not None:
        kw["scale"] = scale
    watch = _WATCHES[-1] if _WATCHES else None
    backend = None
    if dev == "meta" and _ESTIMATE:
        s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
        y, backend = _fused_meta(q, k, v, attn_mask, dropout_p, is_causal, s)
    elif watch is None or dev == "meta":
        y = _cpu_or_direct(q, k, v, kw)
    else:
        backend = sdpa_backend(q, k, v, attn_mask, dropout_p, is_causal, scale)
        if dev in watch.forbid_math:
            y = _fused_only(q, k, v, kw, _call_site(kind))
        else:
            y = _cpu_or_direct(q, k, v, kw)
        if dev == "cpu" and (dev, _compute_dtype(q)) in _MATH_ONLY:
            backend = "math"
    if watch is not None:
        if backend is not None:
            rec = watch.sites.setdefault(_call_site(kind), Site())
            rec.backends.add(backend)
            rec.shapes = rec.shapes or _shapes(q, k, attn_mask, dropout_p, is_causal)
            rec.calls += 1
        watch.calls.append((q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3], is_causal))
    return y


def _fused_only(q, k, v, kw, site: str) -> torch.Tensor:
    """Attention on a fused kernel, or :class:`MathAttentionError` naming ``site`` and why."""
    with sdpa_kernel(FUSED), warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            return F.scaled_dot_product_attention(q, k, v, **kw)
        except RuntimeError as err:
            if "No available kernel" not in str(err):
                raise
            why = "; ".join(str(w.message).strip() for w in said)[:600]
            shapes = _shapes(q, k, kw["attn_mask"], kw["dropout_p"], kw["is_causal"])
            raise MathAttentionError(
                f"attention at {site} would run the math kernel on {q.device.type} ({shapes}): "
                f"no fused kernel takes it ({why}); fix: keep that call on a fused kernel "
                "(arctax.models.layers pads head dims to a multiple of 8; no mask with is_causal)"
            ) from err


def _compute_dtype(q: torch.Tensor) -> torch.dtype:
    dev = q.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else q.dtype


def _cpu_or_direct(q, k, v, kw) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, on the math kernel where the fused CPU one refuses."""
    dev = q.device.type
    if dev != "cpu":  # only torch's CPU kernels refuse; meta/cuda/mps go straight through
        return F.scaled_dot_product_attention(q, k, v, **kw)
    dtype = _compute_dtype(q)
    if (dev, dtype) not in _MATH_ONLY:
        try:
            return F.scaled_dot_product_attention(q, k, v, **kw)
        except RuntimeError as err:  # a torch kernel-selection bug, not bad input
            if "only supported when avx512" not in str(err):
                raise
            _MATH_ONLY.add((dev, dtype))
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, **kw)


PAD_DEVICES = {"cuda"}  # device types whose attention heads are padded (module docstring)


def pads(device: torch.device) -> bool:
    """Whether attention heads on ``device`` are padded: CUDA, and ``meta`` in an estimate."""
    return device.type in PAD_DEVICES or (device.type == "meta" and bool(_ESTIMATE))


def pad_heads(t: torch.Tensor, multiple: int = HEAD_DIM_MULTIPLE) -> torch.Tensor:
    """``(B, H, T, hd)`` zero-padded to a head dim that is a multiple of ``multiple``, laid
    out ``(B, T, H, D)`` in memory (the layout the fused kernels read without a copy)."""
    extra = -t.shape[-1] % multiple
    return F.pad(t.transpose(1, 2), (0, extra)).transpose(1, 2) if extra else t


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    kind: str = "attention",
    pad: bool | None = None,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` on a fused kernel (module docstring).

    With ``pad`` (default: where :func:`pads`, CUDA) the heads are zero-padded to a multiple
    of 8 (k and v may come padded already: a key/value cache holds them so), the scale stays
    that of q's true head dim, the output is sliced back to it: equal to the unpadded call
    (the zero columns add nothing to any q.k; v's give output columns that are dropped)."""
    hd = q.shape[-1]
    if not (pads(q.device) if pad is None else pad):
        return _sdpa(q, k, v, attn_mask, dropout_p, is_causal, None, kind)
    q, k, v = pad_heads(q), pad_heads(k), pad_heads(v)
    if q.shape[-1] == hd:
        return _sdpa(q, k, v, attn_mask, dropout_p, is_causal, None, kind)
    y = _sdpa(q, k, v, attn_mask, dropout_p, is_causal, 1.0 / math.sqrt(hd), kind)
    return y[..., :hd]


@dataclass
class KVCache:
    """Keys/values of one self-attention layer, grown as tokens are decoded (their heads
    padded where :func:`pads`: ``Attention.memory_kv`` gives them so)."""

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
        """Keys/values of ``mem`` (a cross-attention memory is computed once when decoding),
        their heads padded where :func:`pads`, so a key/value cache holds them padded."""
        k, v = self.kv(mem).chunk(2, dim=-1)
        k, v = self._heads(k), self._heads(v)
        return (pad_heads(k), pad_heads(v)) if pads(k.device) else (k, v)

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
        kind = "self-attention" if mem is None and mem_kv is None else "cross-attention"
        kind += ", causal" if causal and mask is None else ", key mask" if mask is not None else ""
        kind += ", cached" if cache is not None else ""
        y = attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal and mask is None,
            kind=kind,
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
