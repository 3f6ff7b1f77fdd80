"""Training throughput: the three models, bf16 on CPU, and a plain ``nn.Transformer``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from baseline import BaselineTransformer
from harness import MODELS, Batch, Row, Timed, interleave, make_batches, to_device, token_counts
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from arctax.data.dataset import PreparedSplit
from arctax.models import build_model
from arctax.models.layers import watch_attention
from arctax.settings import Settings
from arctax.training.module import answer_metrics
from arctax.training.optim import build_optimizer


def train_pass(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batches: list[Batch],
    clip: float,
    autocast: torch.dtype | None = None,
):
    """One pass of Trial 69 steps: forward, loss, backward, gradient clipping, Adam step.

    ``autocast``: run forward and loss under ``torch.autocast`` with this dtype (what
    Lightning's ``bf16-mixed`` does; no gradient scaler is needed for bfloat16).
    """
    model.train()
    dev_type = next(model.parameters()).device.type
    for b in batches:
        with torch.autocast(
            dev_type, dtype=autocast or torch.float32, enabled=autocast is not None
        ):
            loss = answer_metrics(model(b), b["labels"])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()


def count_flops(make_model: Callable[[], nn.Module], batches: list[Batch]) -> int:
    """Model FLOPs of forward + backward over ``batches``, counted on the meta device (no
    compute), as computed: causal attention counts its lower triangle only.

    The math attention backend is forced so attention shows up as the matmuls it is (the CPU
    flash kernel is invisible to ``FlopCounterMode``); it multiplies the whole ``T x T``
    product and masks the upper half, while flash (and the CPU's fused kernel) skip the
    blocks above the diagonal: each causal call's 12·B·H·T²·D (QKᵀ and PV forward, four
    products backward) counts ``(T + 1) / 2T`` of it, the pairs ``j <= i`` it computes.
    Head dims are the model's (a CUDA kernel's zero-padding is not model work).
    """
    with torch.device("meta"):
        model = make_model()
    model.train()
    counter = FlopCounterMode(display=False)
    with watch_attention(forbid_math=()) as watch, counter, sdpa_kernel(SDPBackend.MATH):
        for b in batches:
            mb = to_device(b, "meta")
            answer_metrics(model(mb), mb["labels"])["loss"].backward()
    skipped = sum(
        12 * b * h * t * s * d * (1 - (t + 1) / (2 * t))
        for b, h, t, s, d, causal in watch.calls
        if causal
    )
    return int(counter.get_total_flops() - skipped)


def matmul_flops(n: int, dev: torch.device) -> tuple[Callable[[], Any], int]:
    """A dense fp32 ``n x n`` matmul (a few in a row, ~a training step's time) and its FLOPs."""
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    k = 4
    return (lambda: [a @ b for _ in range(k)]), 2 * n**3 * k


def bench_training(
    cfg: Settings, ds: PreparedSplit, s: Any, dev: torch.device
) -> tuple[list[Row], dict[str, float]]:
    """Training throughput of the three models and the baseline, interleaved with a matmul."""
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(ds), size=min(s.train_examples, len(ds)), replace=False))
    clip = float(cfg.trial69.gradient_clip_val)
    variants: list[tuple[str, Callable[[], nn.Module], list[Batch]]] = []
    for name in MODELS:
        mcfg = cfg.models[name].config()
        batches = make_batches(ds, idx, name, s.batch_size, grouped=True, seed=0)
        variants.append((name, lambda n=name, c=mcfg: build_model(n, c), batches))
    # The CPU precision choice (trainer.cpu_precision) measured side by side: 16-mixed needs
    # CUDA, so on CPU it is 32-true or bf16-mixed.
    bf16 = "champion, bf16-mixed"
    if dev.type == "cpu":
        variants.append((bf16, variants[0][1], variants[0][2]))
    ed = cfg.models["encoder_decoder"].config()
    random_b = make_batches(ds, idx, "encoder_decoder", s.batch_size, grouped=False, seed=0)
    variants.append(
        ("encoder_decoder, random batches", lambda: build_model("encoder_decoder", ed), random_b)
    )
    variants.append(
        ("baseline nn.Transformer, random batches", lambda: BaselineTransformer(**ed), random_b)
    )

    timed, info = [], {}
    for label, make, batches in variants:
        torch.manual_seed(0)
        model = make().to(dev)
        opt = build_optimizer(model.parameters(), cfg.trial69)
        on_dev = [to_device(b, dev) for b in batches]
        real, padded = map(sum, zip(*(token_counts(b) for b in batches), strict=True))
        info[label] = {
            "samples": sum(len(b["labels"]) for b in batches),
            "real": real,
            "padded": padded,
            "flops": count_flops(make, batches),
            "params": sum(p.numel() for p in model.parameters()),
        }
        # one unit = one training step; warm-up = a step on the longest batch (allocator,
        # Adam state, kernel choices)
        longest = [max(on_dev, key=lambda b: b["labels"].numel())]
        ac = torch.bfloat16 if label == bf16 else None
        timed.append(
            Timed(
                label,
                [lambda m=model, o=opt, b=b, a=ac: train_pass(m, o, [b], clip, a) for b in on_dev],
                dev,
                warm=lambda m=model, o=opt, b=longest, a=ac: train_pass(m, o, b, clip, a),
            )
        )
    mm_run, mm_flops = matmul_flops(s.matmul_n, dev)
    timed.append(Timed("matmul", [mm_run] * len(timed[0].units), dev))
    interleave(timed, s.reps, f"training {dev.type}")

    peak_flops = mm_flops * len(timed[-1].units) / timed[-1].seconds
    rows: list[Row] = [
        (
            f"train {dev.type}",
            f"dense fp32 matmul {s.matmul_n}x{s.matmul_n} (MFU reference)",
            f"{peak_flops / 1e9:.1f}",
            "GFLOP/s",
        )
    ]
    tok_s: dict[str, float] = {}
    for v in timed[:-1]:
        i = info[v.name]
        t = v.seconds
        tok_s[v.name] = i["real"] / t
        flop_s = i["flops"] / t
        rows += [
            (f"train {dev.type}", f"{v.name}: params", f"{i['params'] / 1e6:.3f}", "M"),
            (f"train {dev.type}", f"{v.name}: samples/s", f"{i['samples'] / t:.2f}", ""),
            (f"train {dev.type}", f"{v.name}: tokens/s", f"{tok_s[v.name]:.0f}", "real tokens"),
            (
                f"train {dev.type}",
                f"{v.name}: real-token fraction",
                f"{i['real'] / i['padded']:.3f}",
                "timed batches",
            ),
            (
                f"train {dev.type}",
                f"{v.name}: peak memory",
                f"{v.peak / 2**20:.0f}",
                f"MiB, rise during a step ({v.mem_method})",
            ),
            (
                f"train {dev.type}",
                f"{v.name}: FLOPs/sample",
                f"{i['flops'] / i['samples'] / 1e9:.3f}",
                "GFLOP fwd+bwd, as executed (padded)",
            ),
            (f"train {dev.type}", f"{v.name}: achieved", f"{flop_s / 1e9:.1f}", "GFLOP/s"),
            (f"train {dev.type}", f"{v.name}: MFU", f"{flop_s / peak_flops:.2f}", "vs matmul"),
        ]
    ours = "encoder_decoder"
    base = "baseline nn.Transformer, random batches"
    rows += [
        (
            f"train {dev.type}",
            "RATIO tokens/s encoder_decoder (grouped) / baseline",
            f"{tok_s[ours] / tok_s[base]:.2f}x",
            "target >= 3x",
        ),
        (
            f"train {dev.type}",
            "  of which model code (both random batches)",
            f"{tok_s['encoder_decoder, random batches'] / tok_s[base]:.2f}x",
            "ours / nn.Transformer",
        ),
        (
            f"train {dev.type}",
            "  of which length grouping (same model)",
            f"{tok_s[ours] / tok_s['encoder_decoder, random batches']:.2f}x",
            "grouped / random",
        ),
    ]
    if bf16 in tok_s:
        rows.append(
            (
                f"train {dev.type}",
                "RATIO tokens/s champion bf16-mixed / 32-true",
                f"{tok_s[bf16] / tok_s['champion']:.2f}x",
                "CPU precision choice (> 1: bf16 faster)",
            )
        )
    return rows, {"examples": len(idx)}
