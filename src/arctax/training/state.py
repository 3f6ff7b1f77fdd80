"""Resumable training state, kept outside the declared outputs (Snakemake deletes those
before a retry): what a state must match to be resumed, and when it is set aside or cleared."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arctax.config import model_class, model_config
from arctax.io import atomic_write, atomic_write_text
from arctax.plugins import source_sha256
from arctax.settings import Trainer, Trial69

FINISHED = "finished.json"  # in the state dir: training ended normally, outputs written


def fingerprint(cfg: Mapping[str, Any], model_name: str, seed: int, manifest_sha: str) -> str:
    """What a resumable state must match to be resumed."""
    tr = Trainer.of(cfg)
    blob = json.dumps(
        {
            "model": model_name,
            "model_cfg": model_config(cfg, model_name),
            "model_class": model_class(cfg, model_name),
            "model_code": source_sha256(model_class(cfg, model_name)),
            "trial69": Trial69.of(cfg).as_dict(),
            "seed": seed,
            "data": manifest_sha,
            "limits": [tr.limit_train_batches, tr.limit_val_batches],
            "compile": tr.compile,  # compiled kernels round differently: no resume across it
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def prepare_state(state_dir: Path, fp: str) -> Path | None:
    """Return the checkpoint to resume from, or None; stale state is set aside, not reused.

    The state of a training that finished is cleared: its results were copied to the outputs,
    and a second run of a finished job is a request to train again, not to resume. Rank 0
    alone calls this (under DDP the other ranks call :func:`resume_point`, which writes
    nothing): a finished or stale state leaves by one atomic rename, so a rank reading the
    state at the same time sees it whole or gone, and comes to the same answer.
    """
    if (state_dir / FINISHED).exists():
        print(f"{state_dir}: previous training finished; training again from scratch", flush=True)
        gone = state_dir.with_name(f"{state_dir.name}.finished-{time.time_ns()}")
        os.replace(state_dir, gone)
        shutil.rmtree(gone)
    state_dir.mkdir(parents=True, exist_ok=True)
    fp_file = state_dir / "fingerprint.txt"
    last = state_dir / "last.ckpt"
    if resume_point(state_dir, fp) is not None:
        return last
    if last.exists():
        stale = state_dir.with_name(f"{state_dir.name}.stale-{int(time.time())}")
        warnings.warn(
            f"{state_dir}: state from a different config; moved to {stale}, starting fresh",
            stacklevel=2,
        )
        os.replace(state_dir, stale)
        state_dir.mkdir(parents=True)
    atomic_write_text(fp_file, fp + "\n")
    return None


def resume_point(state_dir: Path, fp: str) -> Path | None:
    """The checkpoint a run with fingerprint ``fp`` resumes from, if any (reads only).

    Agrees with what :func:`prepare_state` returns on rank 0, before, during or after it:
    a finished state is never resumed, a stale one never matches.
    """
    last = state_dir / "last.ckpt"
    fp_file = state_dir / "fingerprint.txt"
    try:
        if (state_dir / FINISHED).exists() or fp_file.read_text().strip() != fp:
            return None
    except OSError:
        return None
    return last if last.exists() else None


def copy_atomic(src: Path, dst: Path) -> None:
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
