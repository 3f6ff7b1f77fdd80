"""``make gpu-check``: qualify a GPU machine for arctax in minutes; writes ``GPU_CHECK.md``.

Usage::

    python checks/gpu_check.py                  # on one GPU node (exit 2 without CUDA)
    python checks/gpu_check.py --data results/trial69/data   # reuse a prepared cache
    python checks/gpu_check.py --cpu --quick    # the same code on CPU, tiny sizes (tests)

Sections, each timed, each failure a FAIL row (exit 1): the machine (device, driver, torch,
CUDA, cuDNN, NCCL); dense fp16 / bf16 / fp32 matmul throughput (the MFU reference: the faster
16-bit one, measured); the smoke test on CUDA (``arctax smoke``: the train job's path on the
largest batch, every model, math-kernel attention refused); the attention kernel of every
call site per model and job (math on CUDA: FAIL); every job's peak memory at its largest
batch (estimated on the meta device, the training step also measured) against this card;
training tokens/s, MFU (causal attention counted as computed), peak memory of each model at
full size under 32-true, 16-mixed and bf16-mixed; deterministic repeatability
(two short trainings of each model through ``train()``, same seed: losses and weights bitwise
equal); greedy decoding with and without the KV cache; per-task adaptation; DDP over NCCL
with 2 GPUs where there are 2. Sized to stay under 15 minutes on one GPU (each section's time
is in the report; the memory estimate is ~3-4 minutes of CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch


def no_cuda_line() -> str:
    """The one line said where there is no GPU."""
    return (
        f"gpu-check: torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no CUDA "
        f"device (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); run it on a "
        "GPU node, with a CUDA build of torch (make setup TORCH_SPEC=...)"
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=here / "GPU_CHECK.md", help="report file")
    ap.add_argument("--config", action="append", default=[], help="config YAML (repeatable)")
    ap.add_argument("--data", type=Path, help="a prepared cache of that config (else prepared)")
    ap.add_argument("--cpu", action="store_true", help="run on CPU (to test this script)")
    ap.add_argument("--quick", action="store_true", help="tiny models and sizes (seconds)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every section, write the report; 0 all passed, 1 a section failed, 2 no CUDA."""
    args = _parse(argv)
    if not args.cpu and not torch.cuda.is_available():
        print(no_cuda_line(), file=sys.stderr)
        return 2
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts
    here = Path(__file__).resolve().parent
    # checks/ and benchmarks/ (the measuring harness and the benchmarks it reuses) on the path
    sys.path[:0] = [str(here), str(here.parent / "benchmarks")]
    from gpu_sections import run_all  # the heavy imports (arctax, Lightning) only from here

    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
