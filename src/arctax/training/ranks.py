"""Which DDP rank this process is, before torch.distributed starts, and waiting for the others.

Two launch shapes (docs/SLURM.md): one process that Lightning's subprocess launcher copies
(it re-runs ``sys.argv`` with ``LOCAL_RANK=1..N-1``; rank 0 has no ``LOCAL_RANK`` until it
launches), or ``srun`` starting one Slurm task per rank (``SLURM_PROCID``). Both on one node.
"""

from __future__ import annotations

import os
import sys
import warnings
from subprocess import TimeoutExpired

import pytorch_lightning as pl


def process_rank() -> int:
    """This process's global rank as its launcher set it (0 for a single process).

    Read from the environment, so it works before the Trainer exists: to keep ranks > 0
    from changing the resumable state and to give each rank its own log.
    """
    env = os.environ
    if "RANK" in env:  # torchrun
        return int(env["RANK"])
    if "LOCAL_RANK" in env:  # Lightning's subprocess launcher (one node)
        return int(env["LOCAL_RANK"])
    if int(env.get("SLURM_NTASKS", "1")) > 1:  # srun: one task per rank
        return int(env.get("SLURM_PROCID", "0"))
    return 0


def join_ranks(trainer: pl.Trainer, timeout_s: float = 120.0) -> None:
    """On rank 0, wait for the processes Lightning's launcher started to exit.

    So that the job ends only when every rank has finished writing its log, and no rank is
    left running after a stop. Nothing to wait for on other ranks or under srun.
    """
    procs = getattr(trainer.strategy.launcher, "procs", None) or []
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except TimeoutExpired:
            warnings.warn(
                f"rank process {p.pid} still running after {timeout_s:.0f}s", stacklevel=2
            )
    if procs:
        codes = ", ".join(str(p.returncode) for p in procs)
        print(f"other ranks exited ({codes})", file=sys.stderr, flush=True)
