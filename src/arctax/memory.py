"""Peak GPU memory of each job, known before the queue: measured on the ``meta`` device.

Each job's work runs on ``meta`` tensors (shapes, no data, no GPU) while a dispatch mode
counts the bytes of every live storage, as CUDA's caching allocator counts them
(``torch.cuda.max_memory_allocated``: blocks rounded up to 512 bytes). Attention runs the
fused op CUDA runs (:func:`arctax.models.layers.fused_attention_estimate`: flash, or the
memory-efficient kernel with a mask or in fp32, head dims padded to 8), so what the backward
keeps is what a GPU keeps. Mixed precision: ``meta`` tensors carry no autocast, so
:class:`AsOnCuda` applies CUDA autocast's casting rules to the ops these models call
(``linear``/``matmul``/``bmm`` in fp16 or bf16; ``layer_norm``/``softmax``/``log_softmax``/
``cross_entropy``/``sum`` and the other listed ones in fp32; the cast weights cached for the
forward, as autocast caches them).

Jobs (:func:`estimate_jobs`), each at its largest batch (every example at the largest grid
``data.max_grid`` / ``data.max_cells`` allow, ``data.context_pairs`` demonstrations):

- ``train``: one Trial 69 step at the batch one GPU holds (``trial69.batch_size`` /
  ``trainer.devices``) and the precision CUDA runs (weights, Adam's two moments, the step's
  activations and gradients, Adam's temporary);
- ``evaluate``: greedy decoding of ``eval.batch_size`` queries, ``eval.max_new_tokens``
  tokens, fp32, the key/value cache as it grows;
- ``adapt``: the LoRA fit step (``adapt.batch_size`` examples per adapter slot, every slot of
  ``adapt.tasks_per_batch`` tasks and their held-out folds) and the adapted model decoding
  ``eval.batch_size`` views, fp32;
- ``sweep``: ``train`` at the largest point of ``sweep.space`` (given by the caller: the
  search layer computes it).

Not counted: the CUDA context (~0.3-0.5 GiB per process, outside the allocator), the
allocator's fragmentation (``memory_reserved`` above ``memory_allocated``), cuBLAS and
attention workspaces. :data:`HEADROOM` is the share of a card a job may plan to use.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from arctax.adaptation.lora import inject_lora, lora_parameters
from arctax.adaptation.ttt import adapter_slots
from arctax.data.collate import collate
from arctax.models import build_model
from arctax.models.layers import fused_attention_estimate
from arctax.settings import Adapt, Data, Eval, Model, Settings
from arctax.training.module import answer_metrics
from arctax.training.trainer import HEADROOM

BLOCK = 512  # the CUDA caching allocator's rounding of a block
PRECISION_DTYPE = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


class PeakMemory(TorchDispatchMode):
    """Live and peak bytes of every storage created (or :meth:`track`-ed) inside, each rounded
    up to :data:`BLOCK`; a storage leaves the count when it is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, weakref.ref] = {}  # storage id -> a weak reference to it

    def _count(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = st._cdata
        if key in self._refs:
            return
        n = -(-st.nbytes() // BLOCK) * BLOCK
        self._refs[key] = weakref.ref(st, lambda _, key=key, n=n: self._free(key, n))
        self.live += n
        if self.live > self.peak:
            self.peak = self.live

    def _free(self, key: int, n: int) -> None:
        self._refs.pop(key, None)
        self.live -= n

    def track(self, *tensors: Any) -> None:
        """Count these tensors' storages (if not counted yet)."""
        for t in tree_flatten(list(tensors))[0]:
            if isinstance(t, torch.Tensor):
                self._count(t)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self._count(out)
        elif isinstance(out, (tuple, list)):
            for t in out:
                if isinstance(t, torch.Tensor):
                    self._count(t)
        return out


_LOWER = {F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
          torch.Tensor.__rmatmul__, torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm,
          torch.addmm, torch.baddbmm, torch.addbmm, F.scaled_dot_product_attention}  # fmt: skip
_FP32 = {F.layer_norm, F.group_norm, F.softmax, torch.softmax, torch.Tensor.softmax,
         F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax, F.cross_entropy,
         F.nll_loss, F.mse_loss, torch.sum, torch.Tensor.sum, torch.prod, torch.Tensor.prod,
         torch.cumsum, torch.Tensor.cumsum, torch.exp, torch.Tensor.exp, torch.log,
         torch.Tensor.log, torch.pow, torch.Tensor.pow, torch.rsqrt, torch.Tensor.rsqrt,
         torch.norm, torch.Tensor.norm, F.normalize}  # fmt: skip


class AsOnCuda(TorchFunctionMode):
    """What CUDA does that ``meta`` tensors do not, for the ops these models call: dropout
    keeps a boolean mask (CUDA's fused ``native_dropout``; elsewhere torch keeps a float
    one), and with ``dtype`` autocast's casts (``meta`` tensors carry no autocast): floating
    arguments of the ``_LOWER`` ops in ``dtype``, of the ``_FP32`` ops in float32, a cast
    weight (a leaf that requires grad) cached until the context exits, as autocast does."""

    def __init__(self, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.dtype = dtype
        self._cache: dict[int, torch.Tensor] = {}

    def _cast(self, x: Any, to: torch.dtype) -> Any:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dtype == to:
            return x
        if x.dtype == torch.float64:
            return x
        if to == self.dtype and x.is_leaf and x.requires_grad:
            if id(x) not in self._cache:
                self._cache[id(x)] = x.to(to)
            return self._cache[id(x)]
        return x.to(to)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            x, p, training = _dropout_args(*args, **kwargs)
            if training and 0.0 < p < 1.0:
                return torch.ops.aten.native_dropout(x, p, True)[0]
            return x
        if self.dtype is not None:
            to = self.dtype if func in _LOWER else torch.float32 if func in _FP32 else None
            if to is not None:
                args = tuple(self._cast(a, to) for a in args)
                kwargs = {k: self._cast(v, to) for k, v in kwargs.items()}
        return func(*args, **kwargs)

    def __exit__(self, *exc: Any) -> None:
        self._cache.clear()
        return super().__exit__(*exc)


def _dropout_args(
    input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> tuple[torch.Tensor, float, bool]:
    return input, float(p), bool(training)


# ---- the largest batch ------------------------------------------------------------------


def largest_grid(d: Data) -> tuple[int, int]:
    """The grid with the most tokens ``data.max_grid`` and ``data.max_cells`` allow."""
    side, cells = d.max_grid, d.max_cells or d.max_grid**2
    shapes = [(h, w) for h in range(1, side + 1) for w in range(1, side + 1) if h * w <= cells]
    return max(shapes, key=lambda s: (s[0] * (s[1] + 1), s[0] * s[1]))


def largest_batch(
    d: Data, fmt: str, n: int, device: str | torch.device = "meta"
) -> dict[str, torch.Tensor]:
    """``n`` examples whose every grid (query and demonstrations) is the largest."""
    h, w = largest_grid(d)
    g = np.zeros((h, w), dtype=np.int64)
    k = d.context_pairs
    ex = {"query_in": g, "query_out": g, "context": [(g, g)] * k, "task_idx": 0, "example_idx": 0}
    batch = collate([dict(ex, task_idx=i, example_idx=i) for i in range(n)], fmt, k)
    # on meta, prompt lengths stay on the CPU: decoding reads the longest as a number
    keep = ("prompt_len",) if torch.device(device).type == "meta" else ()
    return {key: v if key in keep else v.to(device) for key, v in batch.items()}


# ---- the jobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A job's peak memory on ``meta``: the peak, and the bytes its parts hold."""

    model: str
    job: str
    precision: str
    batch: int
    tokens: int  # padded tokens of the batch (every token tensor)
    peak_bytes: int
    weights_bytes: int  # parameters, buffers, optimizer state
    what: str

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30


def _tokens(batch: Mapping[str, torch.Tensor]) -> int:
    return int(sum(batch[k].numel() for k in ("src", "tgt_in", "seq", "ctx") if k in batch))


def _meta_model(model: Model) -> nn.Module:
    with torch.device("meta"):
        return build_model(model.name, model.config(), model.cls)


def _adam_moments(mem: PeakMemory, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Adam's two moments per parameter (as they stand from the second step on)."""
    moments = [torch.zeros_like(p) for p in params for _ in range(2)]
    mem.track(moments)
    return moments


def _step(model: nn.Module, batch: Mapping[str, torch.Tensor], context: Any,
          moments: list[torch.Tensor]) -> None:  # fmt: skip
    """Forward and loss (in ``context``: autocast or its casts), backward, foreach Adam's one
    temporary (the square root of the second moments); the gradients are dropped after, as
    ``zero_grad`` does."""
    with context:
        loss = answer_metrics(model(batch), batch["labels"])["loss"]
    loss.backward()
    del loss
    tmp = torch._foreach_sqrt(moments[1::2])
    del tmp
    for p in model.parameters():
        p.grad = None


def train_step(m: Model, d: Data, bs: int, precision: str) -> Estimate:
    """Peak of a Trial 69 training step of model ``m`` at the largest batch of ``d`` (steady
    state: Adam's moments exist, the last step's gradients are gone), under ``precision`` as
    CUDA runs it; ``bs``: the batch one GPU holds (``trial69.batch_size / trainer.devices``)."""
    name = m.name
    with fused_attention_estimate():
        model = _meta_model(m).train()
        batch = largest_batch(d, model.fmt, bs)
        mem = PeakMemory()
        with mem:
            mem.track(list(model.parameters()), list(model.buffers()), list(batch.values()))
            moments = _adam_moments(mem, [p for p in model.parameters() if p.requires_grad])
            held = mem.live
            _step(model, batch, AsOnCuda(PRECISION_DTYPE.get(precision)), moments)
    return Estimate(name, "train", precision, bs, _tokens(batch), mem.peak, held,
                    "forward + backward + Adam")  # fmt: skip


def measure_train_step(
    m: Model, d: Data, bs: int, precision: str, device: torch.device
) -> int | None:
    """The step of :func:`train_step`, run for real on ``device`` (real autocast): its peak
    ``torch.cuda.max_memory_allocated`` on CUDA, beside the estimate (None elsewhere: the
    step still runs)."""
    torch.manual_seed(0)
    model = build_model(m.name, m.config(), m.cls).to(device).train()
    batch = largest_batch(d, model.fmt, bs, device)
    moments = [torch.zeros_like(p) for p in model.parameters() if p.requires_grad for _ in "ab"]
    dtype = PRECISION_DTYPE.get(precision)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    amp = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    _step(model, batch, amp, moments)
    if not cuda:
        return None
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def _decode(model: nn.Module, batch: Mapping[str, torch.Tensor], max_new: int) -> None:
    """Greedy decoding's allocations on ``meta``: ``start``, then ``step`` per token (the
    tokens are unknown on meta: an argmax stands in; the cache grows the same). A model
    without a cache (``supports_cache = False``) re-runs ``forward`` over the prefix: its
    largest step is one forward over the longest answer."""
    if not getattr(model, "supports_cache", True):
        model(batch)
        return
    b = batch["labels"].shape[0]
    logits, cache = model.start(batch)
    pos = torch.zeros(b, 2, dtype=torch.long, device="meta")
    for _ in range(max_new - 1):
        logits = model.step(cache, logits.float().argmax(-1), pos)


def evaluate_job(m: Model, d: Data, ev: Eval) -> Estimate:
    """Peak of ``evaluate``: greedy decoding of ``eval.batch_size`` largest queries, fp32."""
    name = m.name
    with fused_attention_estimate(), torch.inference_mode():
        model = _meta_model(m).eval()
        batch = largest_batch(d, model.fmt, ev.batch_size)
        mem = PeakMemory()
        with mem, AsOnCuda():
            mem.track(list(model.parameters()), list(model.buffers()), list(batch.values()))
            held = mem.live
            _decode(model, batch, ev.max_new_tokens)
    return Estimate(name, "evaluate", "32-true", ev.batch_size, _tokens(batch), mem.peak, held,
                    f"greedy decoding of {ev.max_new_tokens} tokens, KV cache")  # fmt: skip


def adapt_job(m: Model, d: Data, acfg: Adapt, ev: Eval) -> Estimate:
    """Peak of an ``adapt`` job, fp32: the LoRA fit step over every adapter slot (the tasks of
    ``adapt.tasks_per_batch`` and their held-out folds), then decoding ``eval.batch_size``
    views with the adapters."""
    name = m.name
    slots = adapter_slots(acfg, acfg.tasks_per_batch)
    n_fit = slots * acfg.batch_size
    with fused_attention_estimate():
        model = _meta_model(m).eval()
        slot, layers = inject_lora(model, list(acfg.targets), acfg.rank, float(acfg.alpha), slots)
        batch = largest_batch(d, model.fmt, n_fit)
        views = largest_batch(d, model.fmt, ev.batch_size)
        mem = PeakMemory()
        with mem:
            mem.track(list(model.parameters()), list(model.buffers()), list(batch.values()))
            moments = _adam_moments(mem, lora_parameters(layers))
            held = mem.live
            slot.index = torch.arange(n_fit, device="meta") % slots
            _step(model, batch, AsOnCuda(), moments)
            tokens = _tokens(batch)
            del batch
            mem.track(list(views.values()))
            slot.index = torch.arange(ev.batch_size, device="meta") % slots
            with torch.inference_mode(), AsOnCuda():
                _decode(model, views, ev.max_new_tokens)
            slot.index = None
    return Estimate(name, "adapt", "32-true", n_fit, tokens, mem.peak, held,
                    f"LoRA fit of {slots} adapter slots x {acfg.batch_size} examples, then "
                    f"{ev.batch_size} views decoded")  # fmt: skip


JOBS = ("train", "evaluate", "adapt", "sweep")


def step_batch(s: Settings) -> int:
    """The batch one GPU holds in a training step: ``trial69.batch_size / trainer.devices``."""
    return s.trial69.batch_size // s.trainer.devices


def estimate_jobs(
    s: Settings,
    precision: str,
    sweep: Mapping[str, Settings] | None = None,
    jobs: tuple[str, ...] = JOBS,
) -> list[Estimate]:
    """Every job of ``s`` (of the kinds in ``jobs``): per model train (at ``precision``),
    evaluate and adapt; per ``sweep`` entry (model -> the settings at its study's largest
    point) a training step there. A model that cannot run on ``meta`` (a class of your own
    that reads its data) gets a row saying so instead of a figure."""
    plan: list[tuple[str, str, Callable[[], Estimate]]] = []
    bs = step_batch(s)
    for name, m in s.models.items():
        plan += [
            (name, "train", lambda m=m: train_step(m, s.data, bs, precision)),
            (name, "evaluate", lambda m=m: evaluate_job(m, s.data, s.eval)),
            (name, "adapt", lambda m=m: adapt_job(m, s.data, s.adapt, s.eval)),
        ]
    for name, p in (sweep or {}).items():
        top = p.model(name)
        plan.append(
            (name, "sweep", lambda p=p, m=top: train_step(m, p.data, step_batch(p), precision))
        )
    out = []
    for name, job, run in plan:
        if job not in jobs:
            continue
        try:
            e = run()
        except Exception as err:  # a row that says why; the other jobs go on
            e = Estimate(name, job, precision if job in ("train", "sweep") else "32-true",
                         0, 0, -1, 0, f"not estimated on meta: {type(err).__name__}: {err}"[:200])  # fmt: skip
        out.append(replace(e, job=job) if job == "sweep" else e)
    return out


def fits(peak_bytes: int, card_bytes: int) -> bool:
    """Whether a job's estimated peak fits a card's memory with :data:`HEADROOM`."""
    return 0 <= peak_bytes <= HEADROOM * card_bytes


CARDS_GIB = (16, 24, 40, 80)  # V100 / T4 16 GB, A10 / L4 24 GB, A100 40 GB, A100 / H100 80 GB


def format_table(rows: list[Estimate], card_bytes: int | None = None) -> str:
    """The estimates as a Markdown table: the card sizes each fits (at :data:`HEADROOM`), and
    with ``card_bytes`` whether it fits that card."""
    cards = "fits (GiB cards)" + (f" | fits {card_bytes / 2**30:.0f} GiB" if card_bytes else "")
    head = f"| model | job | precision | batch | tokens | peak GiB | {cards} | what |"
    lines = [head, "|---|---|---|---:|---:|---:|---|" + ("---|" if card_bytes else "") + "---|"]
    for e in rows:
        ok = [str(c) for c in CARDS_GIB if fits(e.peak_bytes, c * 2**30)]
        peak = f"{e.peak_gib:.2f}" if e.peak_bytes >= 0 else "?"
        this = ""
        if card_bytes:
            this = " | " + ("yes" if fits(e.peak_bytes, card_bytes) else "NO")
        lines.append(
            f"| {e.model} | {e.job} | {e.precision} | {e.batch} | {e.tokens:,} | {peak} | "
            f"{', '.join(ok) or 'none'}{this} | {e.what} |"
        )
    return "\n".join(lines)
