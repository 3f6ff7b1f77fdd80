"""One trial: a short Trial 69 training with the trial's values, pruned on val_loss.

The same LightningModule, data module and Trainer as every training (``build_trainer``), with
``sweep.max_epochs`` and ``sweep.limit_*_batches``. ``optuna_integration``'s Lightning pruning
callback imports the ``lightning`` package, a second copy of the framework beside
``pytorch_lightning`` (which arctax uses), so :class:`PruningCallback` does the same in a few
lines on ``pytorch_lightning.Callback``.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from arctax.data.datamodule import ARCDataModule
from arctax.lifecycle import Stopped
from arctax.search.space import apply_params
from arctax.settings import Settings
from arctax.training.module import ARCLitModule
from arctax.training.trackers import Trackers
from arctax.training.trainer import build_trainer, compile_model, resolve_precision


class PruningCallback(pl.Callback):
    """Report ``monitor`` to the trial after each validation; prune when the pruner says so."""

    def __init__(self, trial: optuna.Trial, monitor: str = "val_loss") -> None:
        self.trial = trial
        self.monitor = monitor
        self.values: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        v = trainer.callback_metrics.get(self.monitor)
        if v is None:
            return
        value, epoch = float(v), trainer.current_epoch
        self.values.append(value)
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor} {value:.4f}")


class StopCallback(pl.Callback):
    """Raise :class:`~arctax.lifecycle.Stopped` at the next batch once ``should_stop()`` gives a
    reason.

    The worker owns SIGTERM / SIGUSR1 and the Slurm deadline for its whole life (a training's
    PreemptionGuard would swap the handlers per trial and could swallow a signal that comes
    after the last batch); this callback only asks it.
    """

    def __init__(self, should_stop: Callable[[], str | None]) -> None:
        self.should_stop = should_stop

    def _check(self) -> None:
        reason = self.should_stop()
        if reason:
            raise Stopped(reason)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._check()


def trial_config(s: Settings, params: Mapping[str, Any]) -> Settings:
    """The settings a trial trains with: the searched values and the sweep's short training."""
    raw = apply_params(s.raw, params)
    raw["trainer"].update(
        **s.sweep.trial_training(),
        devices=1,  # one trial per GPU; pruning under DDP would need an RDB storage
    )
    return Settings.of(raw)


def train_trial(
    s: Settings,
    model_name: str,
    data_dir: str | Path,
    work_dir: str | Path,
    trial: optuna.Trial,
    should_stop: Callable[[], str | None] = lambda: None,
    trackers_dir: str | Path | None = None,
) -> float:
    """Train ``model_name`` under ``s`` (a :func:`trial_config`); return the best val_loss.

    Raises ``optuna.TrialPruned`` when pruned, and :class:`arctax.lifecycle.Stopped` at the
    next batch once ``should_stop()`` returns a reason (signal, Slurm time limit). ``work_dir``
    (Lightning's checkpoints and logs) is deleted afterwards: a trial's result is its values
    in the study. With ``trainer.loggers`` trackers, the trial is one tracker run
    (``<run>-sweep-<model>-trial<n>``) in the group ``<run>-sweep-<model>``, its values as
    parameters, under ``trackers_dir`` (default ``results/<run>/trackers``).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    t69, tr, k = s.trial69, s.trainer, s.data.context_pairs
    pl.seed_everything(t69.seed, workers=True)  # every trial the same seed: only values differ
    precision, _ = resolve_precision(t69, tr)
    module = ARCLitModule.for_model(s.model(model_name), t69, k)
    fmt = module.model.fmt  # the batch format the model consumes
    compile_model(module.model, tr.compile)  # in place: checkpoint keys unchanged
    dm = ARCDataModule(data_dir, fmt, t69.batch_size, k, tr.num_workers, t69.seed)
    pruning = PruningCallback(trial)
    work_dir = Path(work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)  # left by a killed earlier attempt
    sweep = f"{s.run}-sweep-{model_name}"
    trackers = Trackers(
        s, model_name, t69.seed, work_dir,
        trackers_dir or Path("results") / str(s.run) / "trackers",
        {"trial": trial.number, **{f"trial.{k}": v for k, v in trial.params.items()}},
        name=f"{sweep}-trial{trial.number}", group=sweep, job_type="sweep",
    )  # fmt: skip
    callbacks = [StopCallback(should_stop), pruning, trackers]
    trainer = build_trainer(t69, tr, work_dir, precision, callbacks)
    try:
        trainer.fit(module, datamodule=dm)
    except optuna.TrialPruned:
        trackers.finish("FINISHED", {"pruned": True, "trial": trial.number})
        raise
    except (SIGTERMException, Stopped) as e:
        trackers.finish("KILLED")  # the trial is requeued and run again, as a new tracker run
        if isinstance(e, Stopped):
            raise
        # Lightning's own SIGTERM handler wins when the signal lands between batches: it
        # raises this SystemExit (exit code 0!) before our callback can ask the flag
        raise Stopped("received SIGTERM") from e
    except BaseException:
        trackers.finish("FAILED")
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    if not pruning.values:
        trackers.finish("FAILED")
        raise RuntimeError("training reported no val_loss (is limit_val_batches 0?)")
    best = min(pruning.values, key=lambda v: math.inf if math.isnan(v) else v)
    trackers.finish("FINISHED", {"best_val_loss": best, "pruned": False, "trial": trial.number})
    return best
