"""Benchmark harness: timing (interleaved variants, medians), peak memory, batches, tables.

Shared by every ``benchmarks/bench_*.py`` module and ``benchmarks/epoch_estimate.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arctax.data.collate import MODEL_FORMAT, collate
from arctax.data.datamodule import LengthGroupedBatchSampler
from arctax.data.dataset import PreparedSplit
from arctax.training.smoke_checks import proc_status_kib

REPO = Path(__file__).resolve().parents[1]
MODELS = ("champion", "encoder_decoder", "decoder_only")
Batch = dict[str, torch.Tensor]
Row = tuple[str, str, str, str]  # area, what, value, how / unit


_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def sync(dev: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock time covers it."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


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
            self.base = proc_status_kib("VmRSS") or 0
        except OSError:
            self.method = "ru_maxrss delta (lower bound)"
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc: object) -> None:
        if self.dev.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.dev) - self.base
        elif self.method == "VmHWM":
            self.bytes = ((proc_status_kib("VmHWM") or 0) - self.base) * 1024
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
