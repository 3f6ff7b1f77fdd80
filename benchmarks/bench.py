"""arctax benchmark: one command, one table, measured in one run (``make bench``).

Usage::

    python benchmarks/bench.py            # ~3-6 min on 2 CPU cores; writes BENCHMARKS.md
    python benchmarks/bench.py --quick    # seconds: tiny models, tiny samples (a smoke test)

Timings are medians of repeated rounds after a warm-up. Variants that are compared (our
models, the ``nn.Transformer`` baseline, a dense matmul; decoding with and without the
key/value cache) run interleaved step by step, so a burst of load from other processes hits
all of them alike and their ratios stay fair; a pass's time is the sum over its steps of each
step's median over rounds. CUDA rows are added when a GPU is present.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import gc
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from arctax.config import load_config
from arctax.data.collate import MODEL_FORMAT, collate
from arctax.data.datamodule import LengthGroupedBatchSampler, real_token_fraction
from arctax.data.dataset import PreparedSplit, load_split
from arctax.data.prepare import prepare
from arctax.data.tokenize import EOS
from arctax.evaluation.decode import greedy_decode
from arctax.io import atomic_write_text
from arctax.models import build_model
from arctax.training.module import answer_metrics
from arctax.training.optim import build_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import BaselineTransformer

REPO = Path(__file__).resolve().parents[1]
MODELS = ("champion", "encoder_decoder", "decoder_only")
Batch = dict[str, torch.Tensor]
Row = tuple[str, str, str, str]  # area, what, value, how / unit

# Tiny stand-ins for --quick: the same code paths, seconds instead of minutes.
QUICK_MODELS = {
    "champion": {
        "d_model": 32,
        "n_heads": 4,
        "n_encoder_layers": 1,
        "n_decoder_layers": 1,
        "d_ff": 64,
        "context": {"d_model": 16, "n_heads": 4},
    },
    "encoder_decoder": {
        "d_model": 32,
        "n_heads": 4,
        "n_encoder_layers": 1,
        "n_decoder_layers": 1,
        "d_ff": 64,
    },
    "decoder_only": {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64},
}


@dataclass
class Settings:
    """Sizes of one benchmark run (defaults: the full run; ``quick()``: the smoke test)."""

    batch_size: int = 32
    train_examples: int = 128  # seeded sample of training examples timed per variant
    max_cells: int | None = 100  # timed examples: every grid at most this many cells
    reps: int = 3  # timed rounds after one warm-up round
    decode_pairs: int = 16
    decode_steps: int = 100
    matmul_n: int = 1024
    workflow_reps: int = 3
    quick: bool = False

    @classmethod
    def quick_mode(cls) -> Settings:
        return cls(
            batch_size=8,
            train_examples=16,
            max_cells=25,
            reps=1,
            decode_pairs=4,
            decode_steps=6,
            matmul_n=256,
            workflow_reps=1,
            quick=True,
        )


# ---- timing and memory helpers ----------------------------------------------------------


_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def sync(dev: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock time covers it."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _proc_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so the next region's RSS starts clean.

    Without it, memory that an earlier variant freed stays resident and a later variant
    reuses it without raising the RSS: its peak would read as ~0.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory of a code region: GPU allocator peak, or the process's peak RSS on CPU.

    On Linux ``/proc/self/clear_refs`` (``5``) resets the peak RSS (``VmHWM``) to the current
    RSS, so each region gets its own peak minus its starting RSS. Elsewhere the region only
    shows when it raises the process's lifetime ``ru_maxrss`` (a lower bound; ``method`` says).
    """

    def __init__(self, dev: torch.device) -> None:
        self.dev = dev
        self.method = "torch.cuda.max_memory_allocated" if dev.type == "cuda" else "VmHWM"
        self.base = 0

    def __enter__(self) -> PeakMemory:
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
            self.base = torch.cuda.memory_allocated(self.dev)
            return self
        _release_freed_memory()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _proc_kib("VmRSS") or 0
        except OSError:
            self.method = "ru_maxrss delta (lower bound)"
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc: object) -> None:
        if self.dev.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.dev) - self.base
        elif self.method == "VmHWM":
            self.bytes = ((_proc_kib("VmHWM") or 0) - self.base) * 1024
        else:
            self.bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base) * 1024


@dataclass
class Timed:
    """One variant of an interleaved measurement: ``units`` (e.g. training steps) timed apart."""

    name: str
    units: list[Callable[[], Any]]
    dev: torch.device
    warm: Callable[[], Any] | None = None  # the warm-up (default: every unit once)
    times: list[list[float]] = field(default_factory=list)  # [round][unit]
    peak: int = 0
    mem_method: str = ""

    @property
    def seconds(self) -> float:
        """Robust time of one pass: the sum over units of each unit's median over rounds."""
        return sum(statistics.median(t) for t in zip(*self.times, strict=True))


def interleave(variants: list[Timed], reps: int, label: str) -> None:
    """Warm every variant up, then ``reps`` rounds timing unit ``j`` of every variant in turn.

    Interleaving unit by unit keeps the variants seconds apart, so a burst of load from other
    processes hits them alike; a per-unit median then drops the bursts that hit one round.
    """
    for v in variants:
        for unit in [v.warm] if v.warm is not None else v.units:
            unit()
        sync(v.dev)
    n_units = max(len(v.units) for v in variants)
    for r in range(reps):
        round_times = {v.name: [0.0] * len(v.units) for v in variants}
        for j in range(n_units):
            for v in variants:
                if j >= len(v.units):
                    continue
                sync(v.dev)
                with PeakMemory(v.dev) as mem:
                    t0 = time.perf_counter()
                    v.units[j]()
                    sync(v.dev)
                    round_times[v.name][j] = time.perf_counter() - t0
                v.peak = max(v.peak, mem.bytes)
                v.mem_method = mem.method
        for v in variants:
            v.times.append(round_times[v.name])
        done = ", ".join(f"{v.name} {sum(round_times[v.name]):.2f}s" for v in variants)
        log(f"{label}: round {r + 1}/{reps}: {done}")


def median_time(fn: Callable[[], Any], reps: int) -> float:
    """Median wall-clock seconds of ``fn`` over ``reps`` runs (no warm-up: cold-start work)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---- batches -----------------------------------------------------------------------------


def to_device(batch: Batch, dev: torch.device | str) -> Batch:
    return {k: v.to(dev) for k, v in batch.items()}


def token_counts(batch: Batch) -> tuple[int, int]:
    """(real, padded) tokens of the model's main sequences (the champion's context excluded)."""
    if "seq" in batch:
        return int(batch["seq_mask"].sum()), batch["seq"].numel()
    real = int(batch["src_mask"].sum() + batch["tgt_mask"].sum())
    return real, batch["src"].numel() + batch["tgt_in"].numel()


def make_batches(
    ds: PreparedSplit, idx: np.ndarray, name: str, batch_size: int, grouped: bool, seed: int
) -> list[Batch]:
    """Batches over examples ``idx``: the project's length-grouped sampler, or random batches.

    Random batches are the sampler with every length equal, exactly the datamodule's
    ``group_by_length=False``; each batch is padded to its longest sample either way.
    """
    lengths = ds.lengths(name)[idx] if grouped else np.zeros(len(idx))
    sampler = LengthGroupedBatchSampler(lengths, batch_size, seed)
    fmt = MODEL_FORMAT.get(name, "seq2seq")
    return [collate([ds[int(idx[j])] for j in b], fmt) for b in sampler.batches()]


# ---- training ----------------------------------------------------------------------------


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
    """FLOPs of forward + backward over ``batches``, counted on the meta device (no compute).

    The math attention backend is forced so attention shows up as the matmuls it is (the CPU
    flash kernel is invisible to ``FlopCounterMode``); causal attention counts as full.
    """
    with torch.device("meta"):
        model = make_model()
    model.train()
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        for b in batches:
            mb = to_device(b, "meta")
            answer_metrics(model(mb), mb["labels"])["loss"].backward()
    return int(counter.get_total_flops())


def matmul_flops(n: int, dev: torch.device) -> tuple[Callable[[], Any], int]:
    """A dense fp32 ``n x n`` matmul (a few in a row, ~a training step's time) and its FLOPs."""
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    k = 4
    return (lambda: [a @ b for _ in range(k)]), 2 * n**3 * k


def bench_training(
    cfg: dict, ds: PreparedSplit, s: Settings, dev: torch.device
) -> tuple[list[Row], dict[str, float]]:
    """Training throughput of the three models and the baseline, interleaved with a matmul."""
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(ds), size=min(s.train_examples, len(ds)), replace=False))
    clip = float(cfg["trial69"]["gradient_clip_val"])
    variants: list[tuple[str, Callable[[], nn.Module], list[Batch]]] = []
    for name in MODELS:
        mcfg = cfg["models"][name]
        batches = make_batches(ds, idx, name, s.batch_size, grouped=True, seed=0)
        variants.append((name, lambda n=name, c=mcfg: build_model(n, c), batches))
    # The CPU precision choice (trainer.cpu_precision) measured side by side: 16-mixed needs
    # CUDA, so on CPU it is 32-true or bf16-mixed.
    bf16 = "champion, bf16-mixed"
    if dev.type == "cpu":
        variants.append((bf16, variants[0][1], variants[0][2]))
    ed = cfg["models"]["encoder_decoder"]
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
        opt = build_optimizer(model.parameters(), cfg["trial69"])
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


# ---- decoding ----------------------------------------------------------------------------


class FixedLength(nn.Module):
    """Masks ``EOS`` so greedy decoding runs exactly ``max_new_tokens`` steps on every sample.

    Random weights would stop at a random step (or never), which makes cache/no-cache timings
    depend on luck; with EOS masked both loops do the same, fixed amount of work.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.fmt = model.fmt

    @staticmethod
    def _mask(logits: torch.Tensor) -> torch.Tensor:
        logits[..., EOS] = float("-inf")
        return logits

    def forward(self, batch: Batch) -> torch.Tensor:
        return self._mask(self.model(batch))

    def start(self, batch: Batch) -> tuple[torch.Tensor, Any]:
        logits, cache = self.model.start(batch)
        return self._mask(logits), cache

    def step(self, cache: Any, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self._mask(self.model.step(cache, token, pos))


def bench_decoding(cfg: dict, test: PreparedSplit, s: Settings, dev: torch.device) -> list[Row]:
    """Greedy decoding of ARC-AGI-1 evaluation test pairs, with and without the KV cache."""
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(test), size=min(s.decode_pairs, len(test)), replace=False))
    rows: list[Row] = []
    for name in MODELS:
        torch.manual_seed(0)
        model = FixedLength(build_model(name, cfg["models"][name])).to(dev)
        batch = to_device(collate([test[int(i)] for i in idx], MODEL_FORMAT[name]), dev)
        steps: list[np.ndarray] = []

        def run(cache: bool, m: nn.Module = model, b: Batch = batch, out: list = steps) -> None:
            out.append(greedy_decode(m, b, s.decode_steps, use_cache=cache)[1])

        v = [Timed("cache", [lambda: run(True)], dev), Timed("naive", [lambda: run(False)], dev)]
        interleave(v, s.reps, f"decoding {name} {dev.type}")
        if not all((st == s.decode_steps).all() for st in steps):
            raise RuntimeError(f"{name}: decoding did not run the fixed {s.decode_steps} steps")
        n = len(idx)
        steps_note = f"{s.decode_steps} tokens per pair"
        rows += [
            ("decode", f"{name}: test pairs/s, KV cache", f"{n / v[0].seconds:.2f}", steps_note),
            ("decode", f"{name}: test pairs/s, no cache", f"{n / v[1].seconds:.2f}", steps_note),
            (
                "decode",
                f"{name}: RATIO cache / no cache",
                f"{v[1].seconds / v[0].seconds:.1f}x",
                "target >= 5x",
            ),
        ]
    return rows


# ---- data and workflow ---------------------------------------------------------------------


def bench_data(cfg: dict, work: Path, s: Settings) -> tuple[list[Row], Path]:
    """Prepare all ARC-AGI-1 tasks (400 training + 400 evaluation) and load a split."""
    full = work / "full"
    manifests: list[dict] = []
    t_prep = median_time(lambda: manifests.append(prepare(cfg, full)), s.workflow_reps)
    t_load = median_time(lambda: load_split(full, "train"), 5)
    manifest = manifests[-1]
    n_tasks = sum(c["tasks"] for c in manifest["counts"].values())
    n_tasks += len(manifest.get("unusable_after_filter", []))
    train = load_split(full, "train")
    rows: list[Row] = [
        ("data", f"prepare all {n_tasks} ARC-AGI-1 tasks", f"{t_prep:.2f}", "s, median"),
        ("data", f"load prepared train split ({len(train)} examples)", f"{t_load * 1e3:.1f}", "ms"),
    ]
    src, tgt = train.token_lengths()
    for fmt, lengths in (
        ("seq2seq/champion", np.stack([src, tgt], 1)),
        ("decoder_only", src + tgt),
    ):
        g = real_token_fraction(lengths, s.batch_size, grouped=True)
        r = real_token_fraction(lengths, s.batch_size, grouped=False)
        rows.append(
            (
                "data",
                f"real-token fraction {fmt}, whole train epoch: grouped / random",
                f"{g:.3f} / {r:.3f}",
                f"batch {s.batch_size}",
            )
        )
    return rows, full


def snakemake_bin() -> str:
    exe = Path(sys.executable).parent / "snakemake"
    found = str(exe) if exe.exists() else shutil.which("snakemake")
    if not found:
        raise RuntimeError("snakemake not found next to this Python or on PATH; run `make setup`")
    return found


def bench_workflow(work: Path, s: Settings) -> list[Row]:
    """Dry runs of the demo workflow in a temporary copy of the repository."""
    tree = work / "repo"
    tree.mkdir()
    for part in ("Snakefile", "workflow", "config", "profiles"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, tree / part)
        elif src.exists():
            shutil.copy2(src, tree / part)
    smk = snakemake_bin()
    demo = ["--configfile", "config/demo.yaml"]

    def snake(*args: str) -> str:
        p = subprocess.run(
            [smk, *args], cwd=tree, capture_output=True, text=True, check=False, timeout=300
        )
        if p.returncode:
            raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
        return p.stdout + p.stderr

    seeds = "seeds=[" + ",".join(map(str, range(10))) + "]"
    outs: list[str] = []
    t_cold = median_time(lambda: snake("all", "-n", *demo), 1)  # also creates .snakemake/
    t_fresh = median_time(lambda: snake("all", "-n", *demo), s.workflow_reps)
    t_seeds = median_time(
        lambda: outs.append(snake("all", "-n", *demo, "--config", seeds)), s.workflow_reps
    )
    jobs = _job_total(outs[-1])
    # Up to date without minutes of training: every output the DAG plans becomes an empty
    # placeholder, then --touch stamps them in DAG order. The dry run's work (DAG, file
    # checks) is the same as after a real run; only the files' contents differ.
    summary = snake("all", "--summary", *demo)
    for line in summary.splitlines()[1:]:
        path = line.split("\t")[0].strip()
        if path and "\t" in line:
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            (tree / path).touch()
    snake("all", "--touch", "--cores", "1", *demo)
    t_done = median_time(lambda: outs.append(snake("all", "-n", *demo)), s.workflow_reps)
    if "Nothing to be done" not in outs[-1]:
        raise RuntimeError("workflow copy is not up to date after --touch:\n" + outs[-1])
    rows = []
    if shutil.which("scontrol"):
        # snakemake-executor-plugin-slurm runs this at every snakemake start-up (it reads
        # MinJobAge); with a slurm.conf naming an unreachable controller it waits ~9 s.
        t_probe = median_time(
            lambda: subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=30),
            1,
        )
        rows.append(
            (
                "workflow",
                "Slurm plugin start-up probe (`scontrol show config`)",
                f"{t_probe:.2f}",
                "s, inside every snakemake run below",
            )
        )
    return [
        *rows,
        ("workflow", "snakemake all -n, demo, fresh tree, first run", f"{t_cold:.2f}", "s"),
        ("workflow", "snakemake all -n, demo, fresh tree, again", f"{t_fresh:.2f}", "s, median"),
        (
            "workflow",
            "snakemake all -n, demo, everything up to date",
            f"{t_done:.2f}",
            "s (outputs: placeholders + --touch)",
        ),
        ("workflow", f"snakemake all -n, 3 models x 10 seeds ({jobs} jobs)", f"{t_seeds:.2f}", "s"),
    ]


def _job_total(out: str) -> int:
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return -1


# ---- report --------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, {platform.system()}"
    )


def table(rows: list[Row]) -> str:
    out = ["| area | measure | value | unit / how |", "|---|---|---:|---|"]
    out += [f"| {a} | {w} | {v} | {u} |" for a, w, v, u in rows]
    return "\n".join(out)


def report(rows: list[Row], meta: dict[str, str], s: Settings) -> str:
    cap = f"every grid <= {s.max_cells} cells" if s.max_cells else "all sizes"
    return f"""# arctax benchmarks

Generated by `{meta["command"]}` on {meta["date"]} (total {meta["elapsed"]}).

- Machine: {meta["machine"]}
- Load average (1 min) at start / end: {meta["load"]} (other processes may share the cores).
  Timings: {s.reps} rounds after a warm-up; compared variants interleaved step by step; a
  pass = sum over its steps of each step's median over the rounds.
- Training: {meta["examples"]} seeded ARC-AGI-1 training examples ({cap}, full Trial 69 model
  sizes{" (quick: tiny models)" if s.quick else ""}), batches of {s.batch_size}; one pass =
  forward + loss + backward + clip + Adam step per batch; collation is outside the timing.
  Ours: the project's `LengthGroupedBatchSampler`; random: the same examples in random batches.
  The cell cap narrows the spread of lengths, so random batches waste less here than on the
  whole uncapped epoch (compare the "timed batches" and "whole train epoch" real-token
  fractions): the grouping gain measured here is smaller than in a full Trial 69 epoch.
  The whole-epoch comparison, every grid size, is `make bench-epoch` (BENCHMARKS_EPOCH.md).
  Tokens/s counts real (non-PAD) source + target tokens, the same examples for every variant.
  FLOPs: `FlopCounterMode` on the meta device with math attention, on the padded batches as
  executed (causal attention counted in full); MFU = achieved FLOP/s / dense matmul FLOP/s.
- Decoding: {meta["decode_pairs"]} ARC-AGI-1 evaluation test pairs ({cap}) in one batch,
  random weights, EOS masked so every sample runs exactly {s.decode_steps} greedy steps.
- Workflow: dry runs in a temporary copy of the repository (`config/demo.yaml`).

{table(rows)}
"""


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print the table, write the report; return the report text."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny sizes)")
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="report file")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    ap.add_argument("--train-examples", type=int, help="examples timed per training variant")
    ap.add_argument(
        "--max-cells",
        type=int,
        help="largest grid (cells) among timed examples (default 100; 900 = all of ARC-AGI-1, "
        "which at batch 32 needs far more than 24 GB of RAM on CPU: a GPU-only setting)",
    )
    ap.add_argument("--reps", type=int, help="timed rounds after the warm-up")
    args = ap.parse_args(argv)
    s = Settings.quick_mode() if args.quick else Settings()
    for key in ("train_examples", "max_cells", "reps"):
        if getattr(args, key) is not None:
            setattr(s, key, getattr(args, key))
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    cfg = load_config()
    if s.quick:
        cfg["models"] = QUICK_MODELS
    timed_cfg = {**cfg, "data": {**cfg["data"], "max_cells": s.max_cells}}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="arctax-bench-") as tmp:
        work = Path(tmp)
        log("data: prepare and load")
        data_rows, _ = bench_data(cfg, work, s)
        prepare(timed_cfg, work / "timed")
        train, test = load_split(work / "timed", "train"), load_split(work / "timed", "test")
        meta: dict[str, Any] = {"decode_pairs": min(s.decode_pairs, len(test))}
        for dev in devices:
            log(f"training on {dev.type}")
            train_rows, info = bench_training(timed_cfg, train, s, dev)
            rows += train_rows
            meta["examples"] = info["examples"]
        for dev in devices:
            log(f"decoding on {dev.type}")
            rows += [
                (f"{a} {dev.type}", w, v, u) for a, w, v, u in bench_decoding(cfg, test, s, dev)
            ]
        rows += data_rows
        log("workflow dry runs")
        rows += bench_workflow(work, s)
    meta.update(
        command="python benchmarks/bench.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        elapsed=f"{time.perf_counter() - t0:.0f} s",
        machine=machine(),
        load=f"{load0:.2f} / {os.getloadavg()[0]:.2f}",
    )
    text = report(rows, meta, s)
    print(text)
    atomic_write_text(args.out, text)  # never a half-written report
    return text


if __name__ == "__main__":
    main()
