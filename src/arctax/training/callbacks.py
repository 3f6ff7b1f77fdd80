"""Training callbacks: one-line-per-epoch progress and metrics, and preemption safety."""

from __future__ import annotations

import csv
import io
import math
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist

from arctax.io import atomic_write_text
from arctax.lifecycle import StopFlag, Stopped

METRIC_COLUMNS = [
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "train_token_acc",
    "val_token_acc",
    "val_tf_grid_acc",
    "val_paper_grid_acc",
    "val_paper_cell_acc",
    "lr",
    "seconds",
    "grad_scale",
    "skipped_steps",
]


class EpochMetrics(pl.Callback):
    """Write one row per finished epoch to a CSV (and print it when stdout is not a TTY).

    With a grad scaler (16-mixed) the row holds the scale at the epoch's end and the optimizer
    steps the scaler skipped in it (non-finite gradients: its update backed the scale off);
    more than ``max_skipped`` of an epoch's steps skipped is a warning (a few skips while the
    scale settles in the first epoch are normal). Counted on the device, read once an epoch.

    On resume, rows of epochs at or after the resumed epoch are dropped first, so the file
    holds each epoch once, whatever was interrupted. Rank 0 only; the whole file is rewritten
    atomically each epoch, so a reader (or a kill) never meets half a row.
    """

    def __init__(self, path: Path, echo: bool, max_skipped: float = 1.0) -> None:
        self.path = Path(path)
        self.echo = echo
        self.max_skipped = max_skipped
        self.rows: list[dict[str, Any]] = []
        self._t0 = time.perf_counter()
        self._steps = 0
        self._skipped: torch.Tensor | int = 0
        self._scale_before: torch.Tensor | None = None

    def _write(self) -> None:
        out = io.StringIO()
        w = csv.DictWriter(out, METRIC_COLUMNS)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, out.getvalue())

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        self.rows = []
        if self.path.exists():
            with self.path.open() as f:
                self.rows = [
                    r for r in csv.DictReader(f) if int(r["epoch"]) < trainer.current_epoch
                ]
        self._write()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._steps, self._skipped = 0, 0

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        scale = _scale_tensor(trainer)
        self._scale_before = None if scale is None else scale.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._steps += 1
        scale = _scale_tensor(trainer)
        if scale is not None and self._scale_before is not None:  # backed off: skipped
            self._skipped = self._skipped + (scale < self._scale_before).sum()
        self._scale_before = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        m = trainer.callback_metrics

        def val(key: str) -> float:
            v = m.get(key)
            return float(v) if v is not None else math.nan

        scale = _scale_tensor(trainer)
        skipped = int(self._skipped) if scale is not None else None
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": val("train_loss_epoch"),
            "val_loss": val("val_loss"),
            "train_token_acc": val("train_token_acc"),
            "val_token_acc": val("val_token_acc"),
            "val_tf_grid_acc": val("val_tf_grid_acc"),
            "val_paper_grid_acc": val("val_paper_grid_acc"),
            "val_paper_cell_acc": val("val_paper_cell_acc"),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - self._t0, 3),
            "grad_scale": float(scale) if scale is not None else math.nan,
            "skipped_steps": skipped if skipped is not None else math.nan,
        }
        self.rows.append(row)
        self._write()
        if skipped and skipped > self.max_skipped * max(self._steps, 1):
            warnings.warn(
                f"epoch {row['epoch']}: the grad scaler skipped {skipped} of {self._steps} "
                f"optimizer steps (gradients overflowed fp16; scale now {row['grad_scale']:g}), "
                f"more than trainer.max_skipped_steps ({self.max_skipped:g}); see metrics.csv "
                "(skipped_steps); if it goes on: trial69.precision: bf16-mixed (a recorded "
                "deviation) or find the layer (docs/CUDA.md, fp16 safety)",
                stacklevel=2,
            )
        if self.echo:
            scaler = (
                f"  scale {row['grad_scale']:g} skipped {skipped}" if skipped is not None else ""
            )
            print(
                f"epoch {row['epoch']:>3}  train_loss {row['train_loss']:.4f}  "
                f"val_loss {row['val_loss']:.4f}  val_tf_grid_acc {row['val_tf_grid_acc']:.4f}  "
                f"val_paper_grid_acc {row['val_paper_grid_acc']:.4f}  "
                f"lr {row['lr']:.3g}  {row['seconds']:.1f}s{scaler}",
                flush=True,
            )


def _scale_tensor(trainer: pl.Trainer) -> torch.Tensor | None:
    """The grad scaler's current scale (on its device), or None without a scaler."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return None
    scale = getattr(scaler, "_scale", None)  # the device tensor get_scale() reads
    if scale is None:  # before the first step: not created yet
        return None
    return scale


class PreemptionGuard(pl.Callback):
    """Stop cleanly before Slurm kills the job, so a retry resumes from the last epoch.

    Two triggers, whichever comes first: SIGUSR1 / SIGTERM (Slurm's ``--signal`` and
    ``scancel`` / preemption), or a job-local timer ``margin_s`` before the end time Slurm
    reports for ``$SLURM_JOB_ID`` (the job's :class:`~arctax.lifecycle.StopFlag`). Either raises
    :class:`~arctax.lifecycle.Stopped` at the next batch boundary. The resumable state is the checkpoint saved at the end of the last finished
    epoch (``last.ckpt``, written atomically every epoch): resuming from an epoch boundary
    reproduces an uninterrupted run exactly.

    Under DDP a signal or the timer may reach one rank first. Every rank all-reduces its flag
    at every batch end, so all of them stop at the same batch boundary; a rank stopping alone
    would leave the others waiting forever in their next gradient all-reduce. One process
    runs no collective. The handlers are installed again at ``on_train_start``, replacing
    Lightning's own SIGTERM handler (installed after ``on_fit_start``), which would run a
    broadcast from inside the signal handler and stop only the rank that got the signal.
    """

    def __init__(self, stop: StopFlag) -> None:
        self.stop = stop  # the job's (arctax.lifecycle.JobState.stop)

    @property
    def reason(self) -> str | None:
        """Why training stops, once it must."""
        return self.stop()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.install()
        print(
            f"rank {trainer.global_rank}/{trainer.world_size} pid {os.getpid()} "
            f"({trainer.strategy.root_device}, {type(trainer.strategy).__name__})",
            file=sys.stderr,
            flush=True,
        )
        end = self.stop.watch_slurm_job()
        if end is not None:
            job = os.environ.get("SLURM_JOB_ID")
            print(f"preemption guard: job {job} ends at {time.ctime(end)}", file=sys.stderr)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.install()

    def _check(self, trainer: pl.Trainer) -> None:
        reason = self.stop()
        # any rank stopping stops all (one process: no collective)
        if trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
            raise Stopped(reason or "another rank got a stop signal or hit the time limit")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._check(trainer)

    def restore(self) -> None:
        """Put the previous signal handlers back."""
        self.stop.restore()


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype("int64")), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in s["python"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class RNGState(pl.Callback):
    """Carry the RNG streams through a checkpoint, so a resumed run equals a straight one.

    Lightning does not save RNG state. Without it, a resumed run draws dropout masks and
    loader seeds from ``seed_everything`` again instead of continuing the interrupted stream.
    The state saved with a checkpoint is put back when training starts, before the next
    epoch's loader draws its seed, which is where the uninterrupted run continues from it.

    Under DDP every rank has its own stream (rank r > 0 is reseeded from ``(seed, r)`` at fit
    start, so its dropout masks are not rank 0's) and the checkpoint holds all of them (one
    all-gather when saving; every rank saves, rank 0 writes): each rank resumes its own.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._pending: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        mine = _rng_state()
        if not _distributed():
            return {"ranks": [mine]}
        ranks: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, mine)
        return {"ranks": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # older checkpoints hold one process's state, not a list
        self._pending = state_dict.get("ranks", [state_dict])

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank > 0:
            s = int(np.random.SeedSequence([self.seed, trainer.global_rank]).generate_state(1)[0])
            torch.manual_seed(s)
            np.random.seed(s)
            random.seed(s)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        ranks, self._pending = self._pending, None
        if len(ranks) != trainer.world_size:
            warnings.warn(
                f"checkpoint holds the RNG streams of {len(ranks)} processes, this run has "
                f"{trainer.world_size}: dropout streams do not continue exactly",
                stacklevel=2,
            )
        _set_rng_state(ranks[trainer.global_rank % len(ranks)])
