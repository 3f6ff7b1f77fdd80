"""The smoke test's checks: each one a function of what the run produced, with its verdict.

A verdict is ``"ok"`` or one line saying what is wrong and what to do. The smoke test
(:mod:`arctax.training.smoke`) runs the training path and calls these; they know nothing of
the data or the config, so a test can feed each one a constructed fault.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from arctax.data.tokenize import IGNORE_INDEX
from arctax.evaluation.decode import greedy_tokens
from arctax.models.layers import AttentionWatch, MathAttentionError, watch_attention
from arctax.settings import Limits, Model
from arctax.training.module import answer_metrics

Batch = dict[str, torch.Tensor]
OK = "ok"
MAX_NAMES = 5
DECODE_SAMPLES = 4  # samples of the normal batch decoded both ways
PACKAGE = str(Path(__file__).resolve().parents[1]) + "/"  # .../src/arctax/
_INT_OF_SIZE = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and bits (NaN payloads included; ``torch.equal`` says NaN != NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        as_int = _INT_OF_SIZE[a.element_size()]
        return torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))
    return torch.equal(a, b)


def _names(names: list[str]) -> str:
    more = f" (+{len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else ""
    return ", ".join(names[:MAX_NAMES]) + more


def sync(dev: torch.device | None) -> None:
    """Wait for queued GPU work, so that a wall-clock time covers it."""
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ---- the training steps ----------------------------------------------------------------


@dataclass
class Step:
    """One optimizer step of the smoke run, as :class:`StepProbe` saw it."""

    batch: str  # which batch: "largest" or "normal"
    loss: float | None = None
    missing_grads: list[str] = field(default_factory=list)  # trainable, but no gradient
    nonfinite_grads: list[str] = field(default_factory=list)  # inf / NaN after unscaling
    zero_grads: list[str] = field(default_factory=list)
    scale: float | None = None  # the grad scaler's scale this step used (None: no scaler)
    skipped: bool | None = None  # the scaler skipped the step (non-finite gradients)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StepProbe(pl.Callback):
    """Records every training step: loss, gradients (unscaled, before clipping), scale, time,
    and the peak memory over the run (training steps and validation).

    Lightning's mixed-precision plugin unscales the gradients before ``on_before_optimizer_step``
    and clips them after it, so this hook sees exactly what the optimizer would be given.
    """

    def __init__(self, kinds: list[str]) -> None:
        self.kinds = kinds  # the batch kind of each step, in order
        self.steps: list[Step] = []
        self.device: torch.device | None = None
        self.peak: tuple[int | None, str] = (None, "")  # peak memory over the steps
        self._t0 = 0.0
        self._step: Step | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.device = pl_module.device
        reset_peak_memory(self.device)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync(self.device)
        if self.device is not None:
            self.peak = peak_memory(self.device)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        sync(pl_module.device)
        self._step = Step(self.kinds[batch_idx % len(self.kinds)])
        self._t0 = time.perf_counter()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        step = self._step
        if step is None:
            return
        named = [
            (n.removeprefix("model."), p)
            for n, p in pl_module.named_parameters()
            if p.requires_grad
        ]
        have = [(n, p.grad) for n, p in named if p.grad is not None]
        step.missing_grads = [n for n, p in named if p.grad is None]
        if have:  # one device sync for all parameters
            flags = torch.stack(
                [torch.stack([torch.isfinite(g).all(), g.abs().sum() > 0]) for _, g in have]
            ).tolist()
            step.nonfinite_grads = [
                n for (n, _), (fin, _) in zip(have, flags, strict=True) if not fin
            ]
            step.zero_grads = [
                n for (n, _), (fin, nz) in zip(have, flags, strict=True) if fin and not nz
            ]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            step.scale = float(scaler.get_scale())

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        sync(pl_module.device)
        step = self._step
        if step is None:
            return
        step.seconds = time.perf_counter() - self._t0
        loss = trainer.callback_metrics.get("train_loss_step")
        if loss is None and isinstance(outputs, Mapping):
            loss = outputs.get("loss")
        step.loss = None if loss is None else float(loss)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and step.scale is not None:
            step.skipped = float(scaler.get_scale()) < step.scale  # update() backs off on inf
        self.steps.append(step)
        self._step = None


def judge_steps(steps: list[Step], precision: str, has_scaler: bool) -> dict[str, str]:
    """``finite_loss``, ``finite_grads``, ``nonzero_grads`` (and ``grad_scale`` with a scaler).

    With a grad scaler (16-mixed) a step whose gradients overflow is skipped and the scale
    halved: normal while the scale settles in the first steps. So there, non-finite gradients
    fail only at the last step (or every step); without a scaler, at any step.
    """
    if not steps:
        return {"finite_loss": "no training step ran"}
    out: dict[str, str] = {}
    fp16 = "16" in precision and not precision.startswith("bf16")
    hint = (
        f"; under {precision} that is an fp16 overflow (a value above 65504): find the layer "
        "(docs/CUDA.md, fp16 safety), or confirm with trial69.precision: bf16-mixed "
        "(a recorded deviation)"
        if fp16
        else ""
    )
    bad_loss = [(i, s) for i, s in enumerate(steps) if s.loss is None or not math.isfinite(s.loss)]
    if bad_loss:
        i, s = bad_loss[0]
        out["finite_loss"] = f"loss is {s.loss} at step {i + 1} ({s.batch} batch){hint}"
    else:
        out["finite_loss"] = OK
    missing = sorted({n for s in steps for n in s.missing_grads})
    nonfinite = [(i, s) for i, s in enumerate(steps) if s.nonfinite_grads]
    failing = nonfinite
    if has_scaler:  # the scaler skips such steps; it must recover by the last one
        failing = nonfinite if nonfinite and nonfinite[-1][0] == len(steps) - 1 else []
    if missing:
        out["finite_grads"] = (
            f"no gradient for {_names(missing)}: trainable parameters the loss does not reach"
        )
    elif failing:
        i, s = failing[0]
        every = "; at every step" if len(nonfinite) == len(steps) else ""
        out["finite_grads"] = (
            f"non-finite gradients at step {i + 1} ({s.batch} batch{every}) in "
            f"{_names(s.nonfinite_grads)}{hint}"
        )
    else:
        out["finite_grads"] = OK
    finite_steps = [s for s in steps if not s.nonfinite_grads]
    zero = (
        sorted(set.intersection(*(set(s.zero_grads) for s in finite_steps))) if finite_steps else []
    )
    out["nonzero_grads"] = OK if not zero else f"all-zero gradient at every step: {_names(zero)}"
    if has_scaler:
        scales = [s.scale for s in steps if s.scale is not None]
        skipped = sum(bool(s.skipped) for s in steps)
        last = scales[-1] if scales else float("nan")
        if not math.isfinite(last) or last < 1.0:
            out["grad_scale"] = (
                f"grad scaler scale fell to {last:g} ({skipped} of {len(steps)} steps skipped): "
                f"gradients overflow fp16 even unscaled{hint}"
            )
        else:
            out["grad_scale"] = OK
    return out


def weights_changed(before: Mapping[str, torch.Tensor], model: nn.Module) -> str:
    """Every trainable parameter differs from its value before the steps."""
    same = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and bitwise_equal(before[n], p.detach().to(before[n].device))
    ]
    total = sum(p.requires_grad for p in model.parameters())
    return OK if not same else f"{len(same)} of {total} parameters unchanged: {_names(same)}"


# ---- after the steps: reload, decode, repeat ----------------------------------------------


def reload_check(
    path: Path, model: nn.Module, batch: Batch, models: Mapping[str, Model], limits: Limits
) -> str:
    """The checkpoint, loaded with ``weights_only=True`` (``load_model`` under the run's
    ``models`` and ``limits``, the config it was trained from), gives the same logits."""
    from arctax.evaluation.checkpoints import load_model

    if not path.is_file():
        return f"no checkpoint written at {path}"
    loaded, _ = load_model(path, models, limits)
    dev = next(model.parameters()).device
    loaded.to(dev)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            a, b = model(batch), loaded(batch)
    finally:
        model.train(was)
    if bitwise_equal(a, b):
        return OK
    diff = (a.double() - b.double()).abs()
    return (
        f"logits of the reloaded {path.name} differ from the trained model's (max |diff| "
        f"{diff.max().item():.3g}, {int((diff > 0).sum())} of {diff.numel()}): the model has "
        "state that its state_dict does not hold (a non-persistent buffer, a random table, an "
        "attribute set outside __init__)"
    )


def decode_check(model: nn.Module, batch: Batch, samples: int = DECODE_SAMPLES) -> str:
    """Greedy decoding with the key/value cache gives the same tokens as the naive loop.

    Both run on a float64 copy of the model: the two loops compute the same logits in a
    different order, so in float32 a near-tie of two logits could flip an argmax between them
    by rounding alone; in float64 only a real difference (a mask, a position, the cache) can.
    Answers are decoded up to the batch's longest true answer.
    """
    ref = copy.deepcopy(model).double()
    sub = {k: v[:samples] for k, v in batch.items()}
    max_new = int((sub["labels"] != IGNORE_INDEX).sum(1).max())
    if not getattr(model, "supports_cache", True):  # the declared fallback: forward each token
        greedy_tokens(ref, sub, max_new, use_cache=False)
        return OK
    cached, n_cached = greedy_tokens(ref, sub, max_new, use_cache=True)
    naive, n_naive = greedy_tokens(ref, sub, max_new, use_cache=False)
    if cached.shape == naive.shape and (cached == naive).all() and (n_cached == n_naive).all():
        return OK
    width = min(cached.shape[1], naive.shape[1])
    diff = (cached[:, :width] != naive[:, :width]).nonzero()
    if len(diff[0]):
        i, t = int(diff[0][0]), int(diff[1][0])
        where = f"sample {i}, token {t}: cache {int(cached[i, t])} vs naive {int(naive[i, t])}"
    else:
        where = f"lengths {n_cached.tolist()} (cache) vs {n_naive.tolist()} (naive)"
    return (
        f"KV-cache decoding differs from the naive decoding ({where}, of {max_new} tokens): "
        "start()/step() disagree with forward() (a mask, a position or the cache)"
    )


def step_grads(model: nn.Module, batch: Batch, plugin: Any, seed: int) -> list[torch.Tensor | None]:
    """The gradients of one training step (same seed: same dropout), under ``plugin``'s precision."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with plugin.forward_context():
        loss = answer_metrics(model(batch), batch["labels"])["loss"]
    scaler = getattr(plugin, "scaler", None)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def identical_steps(model: nn.Module, batch: Batch, plugin: Any, seed: int = 0) -> str:
    """Two identical steps (same weights, batch and seed) give bitwise-equal gradients."""
    a, b = step_grads(model, batch, plugin, seed), step_grads(model, batch, plugin, seed)
    names = [n for n, _ in model.named_parameters()]
    differ = [
        (n, x, y)
        for n, x, y in zip(names, a, b, strict=True)
        if (x is None) != (y is None) or (x is not None and not bitwise_equal(x, y))
    ]
    if not differ:
        return OK
    n, x, y = differ[0]
    gap = (
        "one missing" if x is None or y is None else f"max |diff| {(x - y).abs().max().item():.3g}"
    )
    return (
        f"{len(differ)} of {len(names)} parameters' gradients differ between two identical "
        f"steps (first: {n}, {gap}): a kernel without a deterministic algorithm that torch did "
        "not flag; see docs/CUDA.md"
    )


def attention_sites(model: nn.Module, batch: Batch, plugin: Any) -> dict[str, str]:
    """The kernel of every attention call site in one training step (``file:line function,
    kind`` -> ``flash`` / ``efficient`` / ``cudnn`` / ``math``, several joined by ``/``), as
    :func:`arctax.models.layers.watch_attention` records them (nothing refused here)."""
    with watch_attention(forbid_math=()) as watch:
        step_grads(model, batch, plugin, seed=0)
    return site_kernels(watch)


def site_kernels(watch: AttentionWatch) -> dict[str, str]:
    """``{call site: its kernels}`` of a watch."""
    return {site: "/".join(sorted(s.backends)) for site, s in sorted(watch.sites.items())}


def math_sites(sites: Mapping[str, str], device: str) -> list[str]:
    """The call sites that ran the math kernel where it is a failure (CUDA: it keeps the whole
    attention matrix; the CPU runs it for dropout and float64, by design)."""
    return [s for s, k in sites.items() if device == "cuda" and "math" in k.split("/")]


# ---- what a crash means ------------------------------------------------------------------

_DETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


def explain(e: BaseException, largest: str = "the largest batch") -> str:
    """One line for a crash of the training path: what failed, where in arctax, and the fix."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    where = ""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(PACKAGE)]
    if frames:  # the innermost call in arctax's own code: the model line that ran the op
        f = frames[-1]
        where = f" (at {f.filename[len(PACKAGE) :]}:{f.lineno}, {f.name})"
    if isinstance(e, MathAttentionError):
        return f"{msg[:700]}{where}"
    m = _DETERMINISTIC.match(msg)
    if m:
        return (
            f"op {m.group(1)} has no deterministic implementation on this device and "
            f"trial69.deterministic is true{where}; fix: replace it in the model code by a "
            "deterministic equivalent (docs/CUDA.md lists each op "
            "and its status), or run with trial69.deterministic: false (a recorded deviation)"
        )
    if "CUBLAS_WORKSPACE_CONFIG" in msg:
        return (
            f"cuBLAS is not deterministic without CUBLAS_WORKSPACE_CONFIG{where}; fix: "
            "export CUBLAS_WORKSPACE_CONFIG=:4096:8 before the job starts (arctax sets it "
            "itself, but only before CUDA has started in the process)"
        )
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in msg.lower():
        return (
            f"out of GPU memory on {largest}{where}: training would fail on it; fix: "
            "trainer.devices: 2 or more (each process takes trial69.batch_size / devices; "
            "give smoke_test and train as many GPUs in the profile), or a GPU with more "
            f"memory (ARCTAX_GPU_MODEL). torch: {msg[:200]}"
        )
    if "NCCL" in msg or "ProcessGroup" in msg:
        return (
            f"DDP set-up failed{where}: {msg[:200]}; fix: check that the job holds "
            "trainer.devices GPUs (profile: gpu: N for smoke_test and train), rerun with "
            "NCCL_DEBUG=INFO for the reason (NCCL_P2P_DISABLE=1 where GPUs lack peer access)"
        )
    if "no kernel image" in msg or "not compatible with the current PyTorch" in msg:
        return (
            f"this torch build has no kernels for this GPU{where}: {msg[:160]}; fix: install a "
            "torch built for its CUDA capability (make setup TORCH_SPEC=...)"
        )
    return f"{type(e).__name__}: {msg[:300]}{where}"


# ---- figures ---------------------------------------------------------------------------


def proc_status_kib(key: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_memory(dev: torch.device) -> None:
    """Start a new peak: the CUDA allocator's, or the process's peak RSS (Linux ``clear_refs``)."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return
    with contextlib.suppress(OSError):  # else the peak covers the process's whole life
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory(dev: torch.device) -> tuple[int | None, str]:
    """``(bytes, method)``: ``torch.cuda.max_memory_allocated``, or ``VmHWM`` on CPU."""
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev)), "torch.cuda.max_memory_allocated"
    kib = proc_status_kib("VmHWM")
    return (None if kib is None else kib * 1024), "VmHWM (process peak RSS)"


def device_name(dev: torch.device) -> str:
    """The GPU's name, or the CPU's model name."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def protocol_check(model: nn.Module, batch: Batch) -> str:
    """The model protocol (docs/MODELS.md) as the workflow uses it: the class's members, and
    ``forward`` giving one row of vocabulary logits per label."""
    from arctax.data.tokenize import VOCAB_SIZE
    from arctax.models import protocol_problems

    problems = protocol_problems(type(model))
    with torch.no_grad():
        logits = model(batch)
    want = (*batch["labels"].shape, VOCAB_SIZE)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        problems.append(f"forward(batch) gave {got}, expected logits {want} aligned with labels")
    return OK if not problems else "; ".join(problems) + " (docs/MODELS.md)"
