"""Shared by the search tests and their worker processes: a tiny sweep config, and a cheap
real objective for the tests that are about claiming, counting and reaping, not training."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from arctax.config import deep_merge
from arctax.search.space import parse_space, suggest
from arctax.settings import Settings, load_settings
from tests.conftest import REPO, tiny_overrides

MODEL = "champion"
TINY_SWEEP = {
    "models": [MODEL],
    "n_trials": 3,
    "workers": 2,
    "seed": 7,
    "pruner": "none",
    "max_epochs": 1,
    "limit_train_batches": 2,
    "limit_val_batches": 1,
    "max_retries": 1,
    "space": {  # the default space with the model sizes of the tiny models
        "models.champion.d_model": {"type": "int", "low": 32, "high": 48, "step": 16},
        "models.champion.d_ff": {"type": "int", "low": 64, "high": 128, "step": 64},
        "trial69.batch_size": {"type": "categorical", "choices": [8, 16]},
    },
}


def sweep_cfg(run: str = "t", **sweep: Any) -> Settings:
    """The tiny config with a tiny sweep (``sweep`` keys override)."""
    return load_settings(
        overrides={**tiny_overrides(), "run": run, "sweep": deep_merge(TINY_SWEEP, sweep)}
    )


def quadratic(cfg: Settings, sleep_s: float = 0.0):
    """A deterministic objective of the trial's values (minimum at lr = 2e-3), no training."""
    space = parse_space(cfg, MODEL)

    def objective(trial) -> float:
        p = suggest(trial, space)
        time.sleep(sleep_s)
        return (math.log10(p["trial69.optimizer.lr"]) + 2.7) ** 2 + p["trial69.optimizer.betas.0"]

    return objective


def start_process(
    mode: str, cfg: Settings, tmp: Path, *args: str, own_group: bool = False
) -> subprocess.Popen:
    """Run tests/search/sweep_proc.py MODE in its own process (stdout piped, line by line);
    ``own_group``: in a process group of its own, as a Slurm job step is."""
    cfg_file = tmp / f"cfg-{time.monotonic_ns()}.json"
    cfg_file.write_text(json.dumps(cfg.as_dict()))
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("sweep_proc.py")),
            mode,
            str(cfg_file),
            *args,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=own_group,
    )


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 120) -> str:
    """Read the process's output until a line starts with ``prefix``; return that line."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line.strip()
    proc.kill()
    raise AssertionError(f"no {prefix!r} line; output:\n{''.join(seen)[-4000:]}")
