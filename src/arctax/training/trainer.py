"""The Trial 69 Trainer: precision for this machine, callbacks, loggers, devices."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from arctax.training.callbacks import EpochMetrics, RNGState

_warned_precision = False


def resolve_precision(cfg: Mapping[str, Any]) -> tuple[str, str | None]:
    """Trial 69's precision, or the CPU fallback with the reason (16-mixed needs CUDA)."""
    global _warned_precision
    wanted = cfg["trial69"]["precision"]
    if torch.cuda.is_available() or "16-mixed" not in wanted or wanted.startswith("bf16"):
        return wanted, None
    used = cfg["trainer"]["cpu_precision"]
    reason = f"no CUDA on this machine: {wanted} needs a GPU, used {used}"
    if not _warned_precision:
        warnings.warn(f"precision: {reason} (recorded in provenance.json)", stacklevel=2)
        _warned_precision = True
    return used, reason


def build_trainer(
    cfg: Mapping[str, Any], state_dir: Path, precision: str, extra_callbacks: list[pl.Callback]
) -> pl.Trainer:
    """The Trial 69 Trainer (precision already resolved for this machine)."""
    t69, tr = cfg["trial69"], cfg["trainer"]
    es = t69["early_stopping"]
    tty = sys.stdout.isatty()
    callbacks = [
        pl.callbacks.EarlyStopping(monitor=es["monitor"], patience=es["patience"], mode=es["mode"]),
        pl.callbacks.ModelCheckpoint(
            dirpath=state_dir,
            filename="best",
            monitor="val_loss",
            mode="min",
            save_top_k=1,
            save_last=True,
            enable_version_counter=False,
        ),
        EpochMetrics(state_dir / "metrics.csv", echo=not tty),
        RNGState(),
        *extra_callbacks,
    ]
    loggers: list[Any] = [
        pl.loggers.CSVLogger(state_dir, name="logs", version=f"run-{time.time_ns()}")
    ]
    try:
        import tensorboard  # noqa: F401

        loggers.append(pl.loggers.TensorBoardLogger(state_dir, name="tb"))
    except ImportError:
        pass
    accelerator = tr["accelerator"] if tr["accelerator"] != "gpu" else "cuda"
    devices = tr["devices"] if torch.cuda.is_available() else 1
    plugins = []
    if devices > 1 and int(os.environ.get("SLURM_NTASKS", "1")) < devices:
        # One Slurm task holding N GPUs (the executor plugin's jobs cannot ask for one task
        # per GPU without breaking its srun): Lightning starts the N DDP processes itself.
        from lightning_fabric.plugins.environments import LightningEnvironment

        plugins.append(LightningEnvironment())
    return pl.Trainer(
        max_epochs=tr.get("max_epochs") or t69["max_epochs"],
        precision=precision,
        gradient_clip_val=t69["gradient_clip_val"],
        deterministic=t69["deterministic"],
        accelerator=accelerator,
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        plugins=plugins or None,
        use_distributed_sampler=False,  # the length-grouped sampler shards by rank itself
        callbacks=callbacks,
        logger=loggers,
        limit_train_batches=tr.get("limit_train_batches"),
        limit_val_batches=tr.get("limit_val_batches"),
        log_every_n_steps=tr.get("log_every_n_steps", 10),
        num_sanity_val_steps=0,
        enable_progress_bar=tty,
        enable_model_summary=False,
        default_root_dir=state_dir,
    )
