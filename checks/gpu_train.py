"""gpu-check pieces: training throughput and MFU per precision, the attention kernel of every
call site per job, deterministic repeatability, DDP over NCCL."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_train import count_flops
from harness import MODELS, REPO, Row, Timed, interleave, log, make_batches, to_device, token_counts
from torch import nn

from arctax.data.dataset import PreparedSplit
from arctax.evaluation.decode import greedy_tokens
from arctax.models import build_model
from arctax.models.layers import watch_attention
from arctax.settings import Settings
from arctax.training.module import answer_metrics
from arctax.training.optim import build_optimizer
from arctax.training.smoke_checks import attention_sites, bitwise_equal, math_sites, site_kernels

PRECISIONS: dict[str, torch.dtype | None] = {
    "32-true": None,
    "16-mixed": torch.float16,
    "bf16-mixed": torch.bfloat16,
}


@dataclass
class Amp:
    """What Lightning's precision plugin does around a step: autocast, and a scaler for fp16."""

    dev_type: str
    dtype: torch.dtype | None
    scaler: Any = None

    @classmethod
    def of(cls, precision: str, dev: torch.device) -> Amp:
        dtype = PRECISIONS[precision]
        scaler = torch.amp.GradScaler(dev.type) if dtype is torch.float16 else None
        return cls(dev.type, dtype, scaler)

    def forward_context(self) -> contextlib.AbstractContextManager:
        enabled = self.dtype is not None
        return torch.autocast(self.dev_type, dtype=self.dtype or torch.float32, enabled=enabled)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: dict, clip: float, amp: Amp):
    """One Trial 69 step under ``amp``: forward and loss, (scaled) backward, unscale, clip, Adam."""
    model.train()
    with amp.forward_context():
        loss = answer_metrics(model(batch), batch["labels"])["loss"]
    opt.zero_grad(set_to_none=True)
    if amp.scaler is None:
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return
    amp.scaler.scale(loss).backward()
    amp.scaler.unscale_(opt)
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    amp.scaler.step(opt)
    amp.scaler.update()


@contextlib.contextmanager
def deterministic(on: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(on)`` inside, the previous setting after."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def throughput(
    cfg: Settings,
    ds: PreparedSplit,
    dev: torch.device,
    n_batches: int,
    reps: int,
    peak_flops: float,
    precisions: list[str] | None = None,
    models: tuple[str, ...] = MODELS,
) -> list[Row]:
    """Tokens/s and MFU of a Trial 69 step for every model x precision, interleaved.

    The same seeded sample of length-grouped batches of ``trial69.batch_size`` for every
    variant, under ``trial69.deterministic`` (what the train job runs). MFU = model FLOPs as
    computed (padded batches, causal attention's lower triangle; ``count_flops``) per second
    / ``peak_flops``.
    """
    bs = cfg.trial69.batch_size
    clip = float(cfg.trial69.gradient_clip_val)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(ds), size=min(len(ds), n_batches * bs), replace=False))
    variants, info = [], {}
    with deterministic(bool(cfg.trial69.deterministic)):
        for name in models:
            mcfg = cfg.models[name].config()
            batches = make_batches(ds, idx, name, bs, grouped=True, seed=0)[:n_batches]
            flops = count_flops(lambda c=mcfg, n=name: build_model(n, c), batches)
            real = sum(token_counts(b)[0] for b in batches)
            on_dev = [to_device(b, dev) for b in batches]
            longest = max(on_dev, key=lambda b: b["labels"].numel())
            for precision in precisions or list(PRECISIONS):
                torch.manual_seed(0)
                model = build_model(name, mcfg).to(dev)
                opt = build_optimizer(model.parameters(), cfg.trial69)
                amp = Amp.of(precision, dev)
                label = f"{name}, {precision}"
                info[label] = {"flops": flops, "real": real, "samples": len(idx)}
                units = [
                    lambda m=model, o=opt, b=b, a=amp: train_step(m, o, b, clip, a) for b in on_dev
                ]
                warm = lambda m=model, o=opt, b=longest, a=amp: train_step(m, o, b, clip, a)  # noqa: E731
                variants.append(Timed(label, units, dev, warm=warm))
        interleave(variants, reps, f"throughput {dev.type}")
    rows: list[Row] = []
    tok_s: dict[str, float] = {}
    for v in variants:
        i, t = info[v.name], v.seconds
        tok_s[v.name] = i["real"] / t
        rows += [
            ("train", f"{v.name}: tokens/s", f"{tok_s[v.name]:.0f}", "real tokens"),
            ("train", f"{v.name}: MFU", f"{i['flops'] / t / peak_flops:.3g}", "vs measured 16-bit matmul"),
            ("train", f"{v.name}: step", f"{t / len(v.units) * 1e3:.1f}", "ms per batch (medians)"),
            ("train", f"{v.name}: peak memory", f"{v.peak / 2**20:.0f}", f"MiB ({v.mem_method})"),
        ]  # fmt: skip
    for name in models:
        base = tok_s.get(f"{name}, 32-true")
        for p in ("16-mixed", "bf16-mixed"):
            if base and f"{name}, {p}" in tok_s:
                ratio = tok_s[f"{name}, {p}"] / base
                rows.append(("train", f"RATIO {name}: {p} / 32-true", f"{ratio:.2f}x", "tokens/s"))
    return rows


def attention_rows(
    cfg: Settings,
    ds: PreparedSplit,
    dev: torch.device,
    n: int = 8,
    models: tuple[str, ...] = MODELS,
) -> list[Row]:
    """The kernel of every attention call site, per model and job, under that job's settings:
    a training step per precision under ``trial69.deterministic`` (the train job), greedy
    decoding in fp32 without it (evaluate), an eval-mode fp32 step under it (adaptation's
    fit). On CUDA a site on the math kernel is a FAIL (it keeps the whole attention matrix)."""
    t69 = cfg.trial69
    idx = np.arange(min(len(ds), n))
    rows: list[Row] = []
    for name in models:
        torch.manual_seed(0)
        model = build_model(name, cfg.models[name].config()).to(dev)
        batch = to_device(make_batches(ds, idx, name, len(idx), grouped=True, seed=0)[0], dev)
        jobs: dict[str, dict[str, str]] = {}
        with deterministic(bool(t69.deterministic)):
            for precision in PRECISIONS:
                model.train()
                jobs[f"train {precision}"] = attention_sites(model, batch, Amp.of(precision, dev))
            with watch_attention(forbid_math=()) as watch:  # eval mode, gradients: the fit
                model.eval()
                answer_metrics(model(batch), batch["labels"])["loss"].backward()
            jobs["adapt fit 32-true"] = site_kernels(watch)
        with deterministic(False), watch_attention(forbid_math=()) as watch:
            greedy_tokens(model, batch, 3)
        jobs["evaluate 32-true"] = site_kernels(watch)
        for job, sites in jobs.items():
            bad = set(math_sites(sites, dev.type))
            rows += [
                ("attention", f"{name}, {job}: {site}", "FAIL" if site in bad else kernels,
                 f"math kernel on {dev.type}" if site in bad else "SDPA kernel")
                for site, kernels in sites.items()
            ]  # fmt: skip
    return rows


def _short_cfg(cfg: Settings, batches: int, epochs: int, **trainer: Any) -> Settings:
    short = {"max_epochs": epochs, "limit_train_batches": batches, "limit_val_batches": 2}
    return cfg.with_overrides({"trainer": {**short, **trainer}})


def _metrics(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as f:
        return [{k: r[k] for k in ("epoch", "train_loss", "val_loss")} for r in csv.DictReader(f)]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def repeatability(
    cfg: Settings, data_dir: Path, work: Path, batches: int, epochs: int, models=MODELS
) -> list[Row]:
    """Two short trainings of each model, same seed: the same losses and weights, bitwise.

    Through :func:`arctax.training.train.train` itself (the train job's code, its precision
    and deterministic flag), ``batches`` training batches per epoch.
    """
    from arctax.training.train import train

    short = _short_cfg(cfg, batches, epochs)
    seed = int(cfg.trial69.seed)
    rows: list[Row] = []
    for name in models:
        runs = []
        for r in (1, 2):
            out = work / f"repeat-{name}-{r}"
            train(short, name, seed, data_dir, out, work / f".state-{name}-{r}")
            runs.append(out)
        m1, m2 = _metrics(runs[0]), _metrics(runs[1])
        w1, w2 = _weights(runs[0]), _weights(runs[1])
        same_w = w1.keys() == w2.keys() and all(bitwise_equal(w1[k], w2[k]) for k in w1)
        ok = m1 == m2 and same_w
        losses = ", ".join(f"{r['train_loss']}" for r in m1)
        what = (
            "identical"
            if ok
            else ("weights differ" if m1 == m2 else f"losses differ: {m1} vs {m2}")
        )
        rows.append(("repeat", f"{name}: two trainings bitwise equal", "yes" if ok else "NO",
                     f"{what}; {epochs} epoch(s) x {batches} batches, train_loss {losses}"))  # fmt: skip
    return rows


def ddp(
    cfg_files: list[str], overrides: dict, data_dir: Path, work: Path, batches: int
) -> list[Row]:
    """A short champion training with ``trainer.devices: 2`` through the CLI (Lightning starts
    rank 1 by re-running the command, as in the train job): it must exit 0 having run 2
    processes over NCCL (gloo on CPU) with a finite loss. Its loss is not compared with one
    process's: with dropout each rank draws its own masks (docs/SLURM.md, Multi-GPU)."""
    out = work / "ddp"
    cmd = [sys.executable, "-m", "arctax.cli"]
    for f in cfg_files:
        cmd += ["--config", f]
    overlay = work / "ddp-overlay.json"
    overlay.write_text(json.dumps(overrides))
    cmd += ["--config", str(overlay)]
    cmd += ["--set", "trainer.devices=2", "--set", "trainer.max_epochs=1"]
    cmd += [
        "--set",
        f"trainer.limit_train_batches={batches}",
        "--set",
        "trainer.limit_val_batches=2",
    ]
    cmd += ["train", "--model", "champion", "--data", str(data_dir), "--out", str(out)]
    cmd += ["--state", str(work / ".state-ddp")]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    if res.returncode != 0:
        tail = (res.stdout + res.stderr).strip().splitlines()[-3:]
        return [("ddp", "2 processes", "FAIL", f"exit {res.returncode}: {' | '.join(tail)[:300]}")]
    prov = json.loads((out / "provenance.json").read_text())
    loss = _metrics(out)[0]["train_loss"]
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if prov["devices_used"] != 2 or prov["process_group_backend"] != backend:
        got = f"{prov['devices_used']} processes over {prov['process_group_backend']}"
        return [("ddp", "2 processes", "FAIL", f"{got}, expected 2 over {backend}")]
    log(f"ddp: {took:.0f}s, {prov['devices_used']} processes, {prov['process_group_backend']}")
    return [
        ("ddp", "processes", str(prov["devices_used"]), prov["strategy"]),
        ("ddp", "backend", str(prov["process_group_backend"]), str(prov["cluster_environment"])),
        ("ddp", "epoch train_loss", loss, f"{batches} global batches of {prov['batch_size_per_rank']} x 2"),
        ("ddp", "wall time", f"{took:.0f}", "s, start-up included"),
    ]  # fmt: skip
