"""Job logs: every attempt's output of a training job kept beside its resumable state."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from arctax.training.provenance import now
from arctax.training.ranks import process_rank


class _Tee:
    """A text stream that writes to several line-buffered files."""

    def __init__(self, *files: Any) -> None:
        self.files = files

    def write(self, text: str) -> int:
        for f in self.files:
            f.write(text)
        return len(text)

    def flush(self) -> None:
        for f in self.files:
            f.flush()

    def isatty(self) -> bool:
        return False


def attach_log(log_path: str | Path, state_dir: str | Path) -> None:
    """Send stdout/stderr to the job's log and to ``<state_dir>.attempts.log``.

    Snakemake recreates a job's log for each attempt; the attempts log beside the state dir
    keeps every attempt's output (why the first one stopped, where the retry resumed). Under
    DDP, rank r > 0 (from its launcher's environment, :func:`process_rank`) writes its own
    ``<log>.rank<r>`` and ``<state_dir>.attempts.rank<r>.log``: every rank's log is kept, and
    no two processes append to one file.
    """
    state_dir = Path(state_dir)
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    rank = process_rank()
    suffix = f".rank{rank}" if rank else ""
    log_path = Path(f"{log_path}{suffix}")
    history = state_dir.with_name(f"{state_dir.name}.attempts{suffix}.log")
    streams = [open(log_path, "a", buffering=1), open(history, "a", buffering=1)]  # noqa: SIM115
    sys.stdout = sys.stderr = _Tee(*streams)
    job = os.environ.get("SLURM_JOB_ID", "none")
    where = f" rank {rank} (pid {os.getpid()})" if rank else ""
    print(f"=== attempt started {now()} on {os.uname().nodename}{where}, Slurm job {job} ===")
    print(f"(every attempt's output: {history})")
