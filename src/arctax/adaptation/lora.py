"""Low-rank adapters (LoRA) for the plain ``nn.Linear`` layers of arctax models.

``LoRALinear`` computes ``W x + b + (alpha / r) * B_a A_a x`` where ``W, b`` are the frozen base
weights and ``a`` is the adapter of each sample: one module holds ``n`` adapters, so several
tasks' adapters train in one batched forward (each sample uses its task's adapter; the base
is shared). ``B`` starts at zero, so a fresh adapter leaves every logit bitwise unchanged.

Why our own and not ``peft`` (measured on this project's machine, Python 3.11, torch 2.13 CPU):
``peft`` 0.21.2 installs in ~25 s and adds 284 MB (transformers, accelerate, huggingface_hub,
safetensors, tokenizers); ``import peft`` takes ~5.8 s (median of 3), paid by every adaptation
job. It works on these plain modules (``get_peft_model`` with ``target_modules=["q", "kv",
"out"]``, only LoRA trainable, a fresh adapter bitwise the base), but its per-sample adapters
(``adapter_names``) are inference-only ("Cannot pass adapter_names when the model is in training
mode"), so it cannot train several tasks' adapters in one batch, the lever measured in
docs/results/BENCHMARKS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from arctax.models.layers import Attention

TARGETS = ("q", "kv", "out", "mlp", "head", "bridge", "context")


@dataclass
class AdapterSlot:
    """Which adapter each sample uses: ``index (B,)`` ints, shared by every LoRA layer."""

    index: torch.Tensor | None = None


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus ``n_adapters`` low-rank updates, chosen per sample."""

    def __init__(
        self, base: nn.Linear, rank: int, alpha: float, n_adapters: int, slot: AdapterSlot
    ) -> None:
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.scale = alpha / rank
        self.slot = slot
        self.name = ""  # its path in the model, set by inject_lora
        dev, dtype = base.weight.device, base.weight.dtype
        self.A = nn.Parameter(
            torch.empty(n_adapters, rank, base.in_features, device=dev, dtype=dtype)
        )
        self.B = nn.Parameter(
            torch.zeros(n_adapters, base.out_features, rank, device=dev, dtype=dtype)
        )
        self.reset(torch.Generator().manual_seed(0))

    def reset(self, gen: torch.Generator, adapters: list[int] | None = None) -> None:
        """Fresh adapters: ``A`` random (as nn.Linear initialises), ``B`` zero."""
        bound = 1.0 / math.sqrt(self.A.shape[-1])
        with torch.no_grad():
            for a in adapters if adapters is not None else range(self.A.shape[0]):
                init = torch.rand(self.A.shape[1:], generator=gen) * 2 * bound - bound
                self.A[a].copy_(init)
                self.B[a].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        idx = self.slot.index
        if idx is None:
            idx = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        elif idx.shape[0] != x.shape[0]:  # a layer that sees (B * m, ...), e.g. context grids
            idx = idx.repeat_interleave(x.shape[0] // idx.shape[0])
        h = x.reshape(x.shape[0], -1, x.shape[-1])
        delta = torch.bmm(torch.bmm(h, self.A[idx].transpose(1, 2)), self.B[idx].transpose(1, 2))
        return y + self.scale * delta.reshape(y.shape)


def _kind(name: str, parent: nn.Module) -> str | None:
    """Which target group the Linear at ``name`` belongs to (None: never adapted)."""
    last = name.rsplit(".", 1)[-1]
    if name.startswith("context_encoder."):
        return "context"
    if isinstance(parent, Attention) and last in ("q", "kv", "out"):
        return last
    if ".mlp.net." in name:
        return "mlp"
    if name == "head":
        return "head"
    if name.startswith("bridges."):
        return "bridge"
    return None


def _group(model: nn.Module, name: str, own: dict[str, str] | None) -> str | None:
    """A Linear's target group: the model's own map (``lora_groups()``: module path ->
    group, docs/MODELS.md), else by arctax's layers (:func:`_kind`)."""
    if own is not None:
        return own.get(name)
    return _kind(name, model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model)


def inject_lora(
    model: nn.Module, targets: list[str], rank: int, alpha: float, n_adapters: int = 1
) -> tuple[AdapterSlot, list[LoRALinear]]:
    """Freeze ``model`` and wrap the Linear layers of the ``targets`` groups in LoRA, in place.

    Groups: ``q``, ``kv``, ``out`` (attention projections, self and cross), ``mlp``, ``head``,
    ``bridge`` (champion's context bridges), ``context`` (champion's context encoder). A group
    a model lacks (decoder_only has no ``head``: its output is tied) is skipped; no match at all
    is an error.
    """
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise ValueError(f"config key 'adapt.targets': unknown {unknown}; choose from {TARGETS}")
    for p in model.parameters():
        p.requires_grad_(False)
    slot = AdapterSlot()
    layers: list[LoRALinear] = []
    own = model.lora_groups() if callable(getattr(model, "lora_groups", None)) else None
    found = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and _group(model, name, own) in targets
    ]
    if not found:
        raise ValueError(f"config key 'adapt.targets': {targets} match no layer of this model")
    for name, mod in found:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        lora = LoRALinear(mod, rank, alpha, n_adapters, slot)
        lora.name = name
        setattr(parent, attr, lora)
        layers.append(lora)
    return slot, layers


def lora_parameters(layers: list[LoRALinear]) -> list[nn.Parameter]:
    """The trainable parameters: every adapter's ``A`` and ``B``."""
    return [p for layer in layers for p in (layer.A, layer.B)]
