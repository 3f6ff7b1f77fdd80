"""gpu-check's sections, their sizes and the report (``checks/gpu_check.py`` runs them)."""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from bench import QUICK_MODELS
from bench_adapt import bench_adaptation
from bench_decode import bench_decoding
from gpu_env import environment, matmul_peaks, peak_rows
from gpu_train import attention_rows, ddp, deterministic, repeatability, throughput
from harness import REPO, Row, log, table

from arctax.config import DEFAULT_CONFIG
from arctax.data.dataset import load_split
from arctax.data.prepare import prepare
from arctax.io import atomic_write_text
from arctax.memory import estimate_jobs, fits, measure_train_step
from arctax.search.space import largest_point
from arctax.settings import Settings as Config
from arctax.settings import load_settings
from arctax.training.smoke import smoke_test
from arctax.training.smoke_checks import math_sites

FAILED = ("FAIL", "NO")
QUICK_DATA = {"max_cells": 64, "max_tasks": 24}
QUICK_EVAL = {"max_new_tokens": 8}  # the memory estimate decodes eval.max_new_tokens on meta


@dataclass
class Settings:
    """Sizes of one gpu-check (defaults: one GPU, under 10 minutes; ``quick``: CPU tests)."""

    matmul_n: int = 8192
    matmul_per_round: int = 10
    matmul_rounds: int = 5
    train_batches: int = 8  # batches timed per model x precision
    reps: int = 3  # timed rounds after a warm-up (throughput, decoding)
    repeat_batches: int = 8  # training batches per epoch of each repeatability run
    repeat_epochs: int = 2
    decode_pairs: int = 64  # eval.batch_size: the evaluate job's decoding batch
    decode_steps: int = 100
    adapt_tasks: int = 8
    adapt_steps: int = 16
    ddp_batches: int = 8
    quick: bool = False

    @classmethod
    def quick_mode(cls) -> Settings:
        return cls(
            matmul_n=256,
            matmul_per_round=2,
            matmul_rounds=2,
            train_batches=1,
            reps=1,
            repeat_batches=2,
            repeat_epochs=1,
            decode_pairs=2,
            decode_steps=4,
            adapt_tasks=2,
            adapt_steps=1,
            ddp_batches=2,
            quick=True,
        )


@dataclass
class Section:
    name: str
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not any(r[2] in FAILED for r in self.rows)


def run_section(name: str, fn: Callable[[], list[Row]]) -> Section:
    """One section; an exception is its FAIL row, the traceback on stderr, the rest goes on."""
    log(f"section: {name}")
    t0 = time.perf_counter()
    s = Section(name)
    try:
        s.rows = fn()
    except Exception as e:
        traceback.print_exc()
        s.error = f"{type(e).__name__}: {str(e).strip()[:300]}"
        s.rows = [(name, "error", "FAIL", s.error)]
    s.seconds = time.perf_counter() - t0
    log(f"section: {name}: {'ok' if s.ok else 'FAIL'} in {s.seconds:.0f}s")
    return s


def smoke_rows(report: dict) -> list[Row]:
    """The smoke report as rows: per model its verdict, then its figures."""
    rows: list[Row] = []
    for m, r in report["models"].items():
        bad = [f"{k}: {v}" for k, v in r["checks"].items() if v != "ok"]
        rows.append(("smoke", f"{m}: checks", "ok" if not bad else "FAIL",
                     "; ".join(bad)[:400] or ", ".join(r["checks"])))  # fmt: skip
        f = r.get("figures", {})
        if "device" not in f:
            continue
        mem = f["peak_memory_bytes"] or 0
        total = f.get("device_memory_bytes")
        share = f", {mem / total:.0%} of the device" if total else ""
        big = f["batches"]["largest"]
        steps = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in f["step_seconds"].items())
        rows += [
            ("smoke", f"{m}: precision", f["precision"], f"deterministic {f['deterministic']}"),
            ("smoke", f"{m}: peak memory", f"{mem / 2**20:.0f}",
             f"MiB ({f['peak_memory_method']}{share}); largest batch {big['samples']} samples, "
             f"{big['padded_tokens']} tokens"),
            ("smoke", f"{m}: step", steps, "the warm step of each batch"),
        ]  # fmt: skip
        sites = f.get("attention", {})
        bad = set(math_sites(sites, "cuda" if total else "cpu"))
        rows += [
            ("smoke", f"{m}: attention {site}", "FAIL" if site in bad else k, "SDPA kernel")
            for site, k in sites.items()
        ]
        if f.get("grad_scale") is not None:
            rows.append(("smoke", f"{m}: grad scale", f"{f['grad_scale']:g}", "after the steps"))
    return rows


def memory_rows(cfg: Config, dev: torch.device) -> list[Row]:
    """Every job's peak memory at its largest batch, estimated on the meta device (the table of
    ``arctax memory``); on CUDA a FAIL where one does not fit this card, and the training
    step measured for real beside its estimate."""
    precision = cfg.trial69.precision
    sweep = {m: largest_point(cfg, m) for m in cfg.sweep.models}
    card = torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda" else None
    rows: list[Row] = []
    for e in estimate_jobs(cfg, precision, sweep):
        name = f"{e.model} {e.job} ({e.precision}, batch {e.batch})"
        if e.peak_bytes < 0:
            rows.append(("memory", name, "FAIL", e.what))
            continue
        ok = card is None or fits(e.peak_bytes, card)
        note = f"GiB estimated on meta; {e.what}"
        if card is not None:
            note += f"; {'fits' if ok else 'does NOT fit'} this {card / 2**30:.0f} GiB card"
        rows.append(("memory", name, f"{e.peak_gib:.2f}" if ok else "FAIL", note))
        if e.job == "train" and dev.type == "cuda":
            got = measure_train_step(cfg.models[e.model], cfg.data, e.batch, precision, dev)
            rows.append(("memory", f"{name}: measured", f"{got / 2**30:.2f}",
                         f"GiB, torch.cuda.max_memory_allocated (estimate / measured "
                         f"{e.peak_bytes / got:.2f})"))  # fmt: skip
    return rows


def render(sections: list[Section], meta: dict[str, str]) -> str:
    """GPU_CHECK.md: the verdict, each section's time, every row."""
    verdict = "PASS" if all(s.ok for s in sections) else "FAIL"
    failed = [s.name for s in sections if not s.ok]
    times = ", ".join(f"{s.name} {s.seconds:.0f} s" for s in sections)
    rows = [r for s in sections for r in s.rows]
    return f"""# arctax GPU check: {verdict}

Generated by `{meta["command"]}` on {meta["date"]} (total {meta["elapsed"]}).
{"Failed sections: " + ", ".join(failed) + "." if failed else "Every section passed."}

- Device: {meta["device"]}. Sections and their times: {times}.
- Matmul: dense n x n products, median of rounds; MFU = model FLOPs (forward + backward on
  the padded batches, causal attention's lower triangle only: what flash computes; counted on
  the meta device) per second / the faster measured 16-bit matmul.
- Smoke: `arctax smoke` on this device: each model's train-job path (Trainer, precision,
  deterministic algorithms) for 4 steps on the largest and a median batch, checkpoint reload,
  KV-cache decode, two identical steps bitwise; on CUDA a math-kernel attention call fails it.
- Attention: the SDPA kernel of every call site (file:line, kind), per model and job under
  that job's settings (train per precision and adaptation's fit under deterministic
  algorithms, evaluate's decoding without); math on CUDA is a FAIL.
- Memory: each job's peak at its largest batch (every grid the largest), estimated on the meta
  device (`arctax memory`), against this card; the training step also measured for real.
- Train: a Trial 69 step (autocast, grad scaler for 16-mixed, clipping, Adam) of each model at
  the config's sizes, the same batches for every variant, interleaved, deterministic algorithms on.
- Repeat: `train()` twice per model with the same seed; losses and final weights must be
  bitwise equal. Decode / adapt: the benchmarks' rows (`make bench`) on this device, decoding
  `eval.batch_size` pairs without deterministic algorithms (as `evaluate` runs), adaptation
  under `trial69.deterministic` (as the `adapt` job sets it).
- DDP: `arctax train` with `trainer.devices: 2` (2 GPUs needed; else skipped).

{table(rows)}
"""


def run_all(args: argparse.Namespace) -> int:
    """Every section on CUDA (or CPU with ``--cpu``); the report at ``args.out``."""
    t0 = time.perf_counter()
    s = Settings.quick_mode() if args.quick else Settings()
    dev = torch.device("cpu" if args.cpu else "cuda")
    files = [str(p) for p in args.config] or [str(DEFAULT_CONFIG)]
    over: dict = {}
    if args.quick:
        over = {"models": QUICK_MODELS, "data": QUICK_DATA, "trainer": {"num_workers": 0},
                "eval": QUICK_EVAL}  # fmt: skip
    cfg = load_settings(*files, overrides=over)
    sections: list[Section] = []
    peaks: dict[str, float] = {}

    def matmul() -> list[Row]:
        peaks.update(matmul_peaks(dev, s.matmul_n, s.matmul_per_round, s.matmul_rounds))
        return peak_rows(peaks, s.matmul_n)

    with tempfile.TemporaryDirectory(prefix="arctax-gpu-check-") as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            data = work / "data"
            prepare(cfg.data, cfg.taxonomy, data)
        train_split, test_split = load_split(data, "train"), load_split(data, "test")
        ref = lambda: max(peaks.get("fp16", 0.0), peaks.get("bf16", 0.0)) or float("nan")  # noqa: E731
        two = dev.type == "cpu" or torch.cuda.device_count() >= 2
        adapt_det = bool(cfg.trial69.deterministic)  # the adapt job sets it so
        plan: list[tuple[str, Callable[[], list[Row]]]] = [
            ("environment", lambda: environment(dev)),
            ("matmul", matmul),
            ("smoke", lambda: smoke_rows(smoke_test(cfg, data))),
            ("attention", lambda: attention_rows(cfg, train_split, dev)),
            ("memory", lambda: memory_rows(cfg, dev)),
            ("train", lambda: throughput(cfg, train_split, dev, s.train_batches, s.reps, ref())),
            ("repeat", lambda: repeatability(cfg, data, work, s.repeat_batches, s.repeat_epochs)),
            ("decode", lambda: _as(False, bench_decoding, cfg, test_split, s, dev)),
            ("adapt", lambda: _as(adapt_det, bench_adaptation, cfg, test_split, s, dev)),
            ("ddp", lambda: ddp(files, over, data, work, s.ddp_batches) if two else [
                ("ddp", "2 processes", "skipped", f"{torch.cuda.device_count()} GPU visible")]),
        ]  # fmt: skip
        for name, fn in plan:
            sections.append(run_section(name, fn))
    meta = {
        "command": "python checks/gpu_check.py " + " ".join(_argv(args)),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed": f"{time.perf_counter() - t0:.0f} s",
        "device": next((r[2] for r in sections[0].rows if r[1] == "device"), str(dev)),
    }
    text = render(sections, meta)
    atomic_write_text(args.out, text)
    print(text)
    log(f"wrote {args.out}")
    return 0 if all(x.ok for x in sections) else 1


def _as(flag: bool, fn: Callable[..., list[Row]], *args: object) -> list[Row]:
    """``fn(*args)`` with deterministic algorithms ``flag`` (a job's own setting): the train
    job's, switched on by the sections before, must not time another job's work."""
    with deterministic(flag):
        return fn(*args)


def _argv(args: argparse.Namespace) -> list[str]:
    out = [f"--config {c}" for c in args.config]
    out += ["--cpu"] * args.cpu + ["--quick"] * args.quick
    out += [f"--data {args.data}"] if args.data else []
    if args.out != REPO / "GPU_CHECK.md":
        out.append(f"--out {args.out}")
    return out
