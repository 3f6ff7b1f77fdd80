"""Training callbacks: one-line-per-epoch progress and metrics, and preemption safety."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

METRIC_COLUMNS = [
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "train_token_acc",
    "val_token_acc",
    "val_tf_grid_acc",
    "lr",
    "seconds",
]


class EpochMetrics(pl.Callback):
    """Append one row per finished epoch to a CSV (and print it when stdout is not a TTY).

    On resume, rows of epochs at or after the resumed epoch are dropped first, so the file
    holds each epoch once, whatever was interrupted.
    """

    def __init__(self, path: Path, echo: bool) -> None:
        self.path = Path(path)
        self.echo = echo
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        rows = []
        if self.path.exists():
            with self.path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < trainer.current_epoch]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, METRIC_COLUMNS)
            w.writeheader()
            w.writerows(rows)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        m = trainer.callback_metrics

        def val(key: str) -> float:
            v = m.get(key)
            return float(v) if v is not None else math.nan

        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": val("train_loss_epoch"),
            "val_loss": val("val_loss"),
            "train_token_acc": val("train_token_acc"),
            "val_token_acc": val("val_token_acc"),
            "val_tf_grid_acc": val("val_tf_grid_acc"),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - self._t0, 3),
        }
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, METRIC_COLUMNS).writerow(row)
        if self.echo:
            print(
                f"epoch {row['epoch']:>3}  train_loss {row['train_loss']:.4f}  "
                f"val_loss {row['val_loss']:.4f}  val_tf_grid_acc {row['val_tf_grid_acc']:.4f}  "
                f"lr {row['lr']:.3g}  {row['seconds']:.1f}s",
                flush=True,
            )


class Preempted(RuntimeError):
    """Training stopped early on a signal or the job's time limit; resumable state is saved."""


def slurm_job_end(job_id: str) -> float | None:
    """Epoch seconds at which Slurm job ``job_id`` hits its time limit, if Slurm says."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%e"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return time.mktime(time.strptime(out, "%Y-%m-%dT%H:%M:%S"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


class PreemptionGuard(pl.Callback):
    """Stop cleanly before Slurm kills the job, so a retry resumes from the last epoch.

    Two triggers, whichever comes first: SIGUSR1 / SIGTERM (Slurm's ``--signal`` and
    ``scancel`` / preemption), or a job-local timer ``margin_s`` before the end time Slurm
    reports for ``$SLURM_JOB_ID``. Either raises :class:`Preempted` at the next batch
    boundary. The resumable state is the checkpoint saved at the end of the last finished
    epoch (``last.ckpt``, written atomically every epoch): resuming from an epoch boundary
    reproduces an uninterrupted run exactly.
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self, margin_s: float = 120.0) -> None:
        self.margin_s = margin_s
        self.reason: str | None = None
        self.deadline: float | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.reason = f"received {signal.Signals(signum).name}"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        except ValueError:  # not the main thread: rely on the timer
            self._previous.clear()
        job = os.environ.get("SLURM_JOB_ID")
        end = slurm_job_end(job) if job else None
        if end is not None:
            self.deadline = end - self.margin_s
            print(f"preemption guard: job {job} ends at {time.ctime(end)}", file=sys.stderr)

    def _check(self) -> None:
        if self.reason is None and self.deadline is not None and time.time() >= self.deadline:
            self.reason = f"within {self.margin_s:.0f}s of the Slurm time limit"
        if self.reason is not None:
            raise Preempted(self.reason)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._check()

    def restore(self) -> None:
        """Put the previous signal handlers back."""
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()


class RNGState(pl.Callback):
    """Carry the RNG streams through a checkpoint, so a resumed run equals a straight one.

    Lightning does not save RNG state. Without it, a resumed run draws dropout masks and
    loader seeds from ``seed_everything`` again instead of continuing the interrupted stream.
    The state saved with a checkpoint is put back when training starts, before the next
    epoch's loader draws its seed, which is where the uninterrupted run continues from it.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        np_state = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype("int64")), *np_state[2:]],
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        import random

        import numpy as np
        import torch

        s, self._pending = self._pending, None
        torch.set_rng_state(s["torch"])
        n = s["numpy"]
        np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
        random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in s["python"]))
        if "cuda" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])
