"""gpu-check pieces: what the machine is, and its measured dense matmul throughput."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time

import torch
from harness import Row, sync

from arctax.training.smoke_checks import device_name

MATMUL_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def driver_version() -> str:
    """The NVIDIA driver's version, from ``nvidia-smi`` (``unknown`` without it)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "unknown (no nvidia-smi on PATH)"
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({type(e).__name__})"
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else "unknown"


def environment(dev: torch.device) -> list[Row]:
    """Device, driver, torch / CUDA / cuDNN / NCCL versions, GPUs visible."""
    rows: list[Row] = [("environment", "device", device_name(dev), str(dev))]
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        nccl = getattr(torch.cuda, "nccl", None)
        try:
            nccl_v = ".".join(map(str, nccl.version())) if nccl is not None else "none"
        except Exception as e:  # a build without NCCL
            nccl_v = f"none ({type(e).__name__})"
        rows += [
            ("environment", "compute capability", f"{p.major}.{p.minor}", f"{p.multi_processor_count} SMs"),
            ("environment", "memory", f"{p.total_memory / 2**30:.1f}", "GiB"),
            ("environment", "GPUs visible", str(torch.cuda.device_count()),
             f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}"),
            ("environment", "driver", driver_version(), "nvidia-smi"),
            ("environment", "CUDA (torch build)", str(torch.version.cuda), ""),
            ("environment", "cuDNN", str(torch.backends.cudnn.version()), ""),
            ("environment", "NCCL", nccl_v, ""),
        ]  # fmt: skip
    else:
        rows.append(("environment", "CPU cores", str(os.cpu_count()), f"{torch.get_num_threads()} torch threads"))  # fmt: skip
    rows += [
        ("environment", "torch", torch.__version__, ""),
        ("environment", "Python", platform.python_version(), platform.system()),
        ("environment", "CUBLAS_WORKSPACE_CONFIG", str(os.environ.get("CUBLAS_WORKSPACE_CONFIG")),
         "deterministic cuBLAS needs :4096:8 (arctax sets it)"),
    ]  # fmt: skip
    return rows


def matmul_peak(
    dev: torch.device, dtype: torch.dtype, n: int, per_round: int, rounds: int
) -> float:
    """Measured dense ``n x n`` matmul throughput in FLOP/s (median of ``rounds`` rounds)."""
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):  # warm-up: cuBLAS handles, kernel choice
        a @ b
    sync(dev)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            a @ b
        sync(dev)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 * per_round / statistics.median(times)


def matmul_peaks(dev: torch.device, n: int, per_round: int, rounds: int) -> dict[str, float]:
    """FLOP/s of dense fp16, bf16 and fp32 matmuls (fp32 without TF32: torch's default)."""
    return {k: matmul_peak(dev, dt, n, per_round, rounds) for k, dt in MATMUL_DTYPES.items()}


def peak_rows(peaks: dict[str, float], n: int) -> list[Row]:
    rows: list[Row] = [
        ("matmul", f"dense {k} {n}x{n}", f"{v / 1e12:.2f}", "TFLOP/s measured")
        for k, v in peaks.items()
    ]
    ref = max(peaks["fp16"], peaks["bf16"])
    rows.append(
        ("matmul", "MFU reference", f"{ref / 1e12:.2f}", "TFLOP/s: the faster of fp16/bf16")
    )
    return rows
