"""Experiment trackers by config (``trainer.loggers``): TensorBoard, Weights & Biases, MLflow.

One tracker run per model x seed, named ``<run>-<model>-seed<seed>``, carrying the study's
config as parameters and, when the training ends, the Trial 69 audit summary and provenance.
A retried or resumed job continues the SAME tracker run: the run's identity (the W&B run id,
derived from run / model / seed and the training's first start; the MLflow run id) is kept in
``tracker.json`` in the resumable state folder, which is cleared exactly when the training
is (a finished one trained again gets a new tracker run). Each epoch is logged once, at step
= epoch, from the row :class:`~arctax.training.callbacks.EpochMetrics` wrote to metrics.csv;
``tracker.json`` remembers the last epoch logged, so an epoch run again after a hard kill is
not logged twice (a resumed run reproduces it exactly). W&B runs offline unless
``trainer.tracking.wandb_mode: online`` (``wandb sync`` uploads later); MLflow writes to a
file store in ``results/<run>/trackers/mlruns`` unless ``trainer.tracking.mlflow_uri`` names
a server. Logs go to ``results/<run>/trackers/`` (kept; ``.state`` is safe to delete).
Rank 0 alone logs. The extras are checked at config time (``Trainer.check_trackers``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from arctax.io import atomic_write_text
from arctax.lifecycle import STOPPED_EXIT
from arctax.settings import Settings

RECORD = "tracker.json"  # in the state dir: the tracker runs' ids, the last epoch logged
METRICS = ["train_loss", "val_loss", "train_token_acc", "val_token_acc", "val_tf_grid_acc",
           "val_paper_grid_acc", "val_paper_cell_acc", "lr", "seconds",
           "grad_scale", "skipped_steps"]  # fmt: skip


def run_name(run: str, model: str, seed: int) -> str:
    """The tracker run's name: ``<run>-<model>-seed<seed>``."""
    return f"{run}-{model}-seed{seed}"


def wandb_id(run: str, name: str, seed: int, started: int) -> str:
    """A W&B run id from run / model (or trial) name / seed and this training's first start."""
    digest = hashlib.sha256(f"{run}/{name}/{seed}/{started}".encode()).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", name)[-48:]  # W&B ids: letters, digits, - and _
    return f"{safe}-{digest[:10]}"


def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": v}`` from nested mappings (lists kept as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat(v, key + "."))
        else:
            out[key] = v
    return out


class Trackers(pl.Callback):
    """Log every epoch to the trackers of ``trainer.loggers`` (see the module docstring)."""

    def __init__(
        self,
        s: Settings,
        model: str,
        seed: int,
        state_dir: str | Path,
        trackers_dir: str | Path,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
        group: str | None = None,
        job_type: str = "train",
    ) -> None:
        self.settings, self.model, self.seed = s, model, seed
        self.trainer, self.run = s.trainer, s.run
        self.names = [n for n in self.trainer.loggers if n != "csv"]
        self.state_dir, self.dir = Path(state_dir), Path(trackers_dir)
        self.params = dict(params or {})
        self.name = name or run_name(s.run, model, seed)  # a sweep trial: own name and group
        self.group = group or str(s.run)
        self.job_type = job_type
        self.record: dict[str, Any] = {}
        self._wandb: Any = None
        self._mlflow: Any = None
        self._tb: Any = None
        self._metrics: Any = None
        self.active = False

    # -------------------------------------------------------------- the run's identity
    def _load_record(self) -> bool:
        """The saved record of this training (True: a retry or resume), else a new one.

        The state folder holds only this training's files (:mod:`arctax.training.state` sets
        a stale one aside and clears a finished one), so a record there is this training's,
        even when the attempt before stopped before its first epoch ended.
        """
        path = self.state_dir / RECORD
        if path.exists():
            self.record = json.loads(path.read_text())
            return True
        started = time.time_ns()
        self.record = {
            "name": self.name,
            "started": started,
            "wandb_id": wandb_id(self.run, self.name, self.seed, started),
            "mlflow_run_id": None,
            "logged_epoch": -1,
        }
        return False

    def _save_record(self) -> None:
        atomic_write_text(self.state_dir / RECORD, json.dumps(self.record, indent=2) + "\n")

    # -------------------------------------------------------------- Lightning hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0 or not self.names:
            return
        from arctax.training.callbacks import EpochMetrics

        self._metrics = next(c for c in trainer.callbacks if isinstance(c, EpochMetrics))
        resumed = self._load_record()
        record = {"config": self.settings.as_dict(), "model": self.model, "seed": self.seed,
                  **self.params}  # fmt: skip
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            folder = self.dir / "tensorboard" / self.name / str(self.record["started"])
            # purge_step: events of epochs at or after the resumed one are dropped (re-run)
            self._tb = SummaryWriter(str(folder), purge_step=trainer.current_epoch or None)
            if not resumed:
                self._tb.add_text(
                    "config", f"```\n{json.dumps(record, indent=2, default=str)}\n```"
                )
        if "wandb" in self.names:
            self._start_wandb(record)
        if "mlflow" in self.names:
            self._start_mlflow(record, resumed)
        self._save_record()
        self.active = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.active or trainer.sanity_checking or not self._metrics.rows:
            return
        row = self._metrics.rows[-1]
        epoch = int(row["epoch"])
        if epoch != trainer.current_epoch or epoch <= self.record["logged_epoch"]:
            return
        values = {k: float(row[k]) for k in METRICS if row.get(k) is not None}
        values = {k: v for k, v in values.items() if v == v}  # no NaN
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, epoch)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({**values, "epoch": epoch}, step=epoch)
        if self._mlflow is not None:
            from mlflow.entities import Metric

            ms = int(time.time() * 1000)
            metrics = [Metric(k, v, ms, epoch) for k, v in values.items()]
            self._mlflow.log_batch(self.record["mlflow_run_id"], metrics=metrics)
        self.record["logged_epoch"] = epoch
        self._save_record()

    # -------------------------------------------------------------- backends
    def _start_wandb(self, record: Mapping[str, Any]) -> None:
        import wandb

        tracking = self.trainer.tracking
        folder = self.dir / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        self._wandb = wandb.init(
            project=tracking.project,
            entity=tracking.wandb_entity,
            name=self.name,
            id=self.record["wandb_id"],
            resume="allow",  # the same run on every attempt
            group=self.group,
            job_type=self.job_type,
            tags=[self.model, f"seed{self.seed}"],
            dir=str(folder),
            config=flat(record),
            mode=tracking.wandb_mode,
            settings=wandb.Settings(console="off", silent=True),
        )

    def _start_mlflow(self, record: Mapping[str, Any], resumed: bool) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        tracking = self.trainer.tracking
        uri = tracking.mlflow_uri
        if not uri:  # the file store, which MLflow 3 keeps (maintenance mode) behind this flag
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (self.dir / "mlruns").resolve().as_uri()
        client = MlflowClient(tracking_uri=uri)
        self._mlflow = client
        run_id = self.record.get("mlflow_run_id")
        if run_id:  # a retry or resume: the same run, running again
            client.update_run(run_id, status="RUNNING")
            return
        project = tracking.project
        exp = client.get_experiment_by_name(project)
        exp_id = exp.experiment_id if exp else client.create_experiment(project)
        tags = {"model": self.model, "seed": str(self.seed), "arctax.run": str(self.run),
                "arctax.group": self.group, "arctax.job_type": self.job_type}  # fmt: skip
        run = client.create_run(exp_id, run_name=self.name, tags=tags)
        self.record["mlflow_run_id"] = run.info.run_id
        self._save_record()  # before anything else can fail: a retry finds this run
        params = [Param(k[:250], str(v)[:6000]) for k, v in flat(record).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run.info.run_id, params=params[i : i + 100])
        client.log_batch(run.info.run_id, tags=[RunTag("mlflow.runName", self.name)])

    # -------------------------------------------------------------- the end of an attempt
    def finish(self, status: str, summary: Mapping[str, Any] | None = None,
               provenance: Path | None = None) -> None:  # fmt: skip
        """Close the tracker runs of this attempt.

        ``status``: ``FINISHED`` (outputs written; ``summary`` holds the audit summary and
        provenance facts, logged as W&B summary / MLflow tags), ``KILLED`` (stopped to be
        resumed: the same runs continue on the next attempt) or ``FAILED``.
        """
        if not self.active:
            return
        self.active = False
        summary = {k: v for k, v in (summary or {}).items() if v is not None}
        for name, close in (("tensorboard", self._finish_tb), ("wandb", self._finish_wandb),
                            ("mlflow", self._finish_mlflow)):  # fmt: skip
            try:  # a tracker's failure never costs the training its outputs
                close(status, summary, provenance)
            except Exception as e:
                warnings.warn(f"tracker {name}: closing its run failed: {e}", stacklevel=2)

    def _finish_tb(self, status: str, summary: Mapping[str, Any], provenance: Any) -> None:
        if self._tb is not None:
            if summary:
                self._tb.add_text("summary", json.dumps(summary, indent=2, default=str))
            self._tb.close()

    def _finish_wandb(self, status: str, summary: Mapping[str, Any], provenance: Any) -> None:
        if self._wandb is not None:
            if summary:
                self._wandb.summary.update(dict(summary))
            self._wandb.finish(exit_code={"FINISHED": 0, "KILLED": STOPPED_EXIT}.get(status, 1))

    def _finish_mlflow(self, status: str, summary: Mapping[str, Any], provenance: Any) -> None:
        if self._mlflow is None:
            return
        from mlflow.entities import RunTag

        run_id = self.record["mlflow_run_id"]
        if summary:
            tags = [RunTag(k[:250], str(v)[:5000]) for k, v in summary.items()]
            self._mlflow.log_batch(run_id, tags=tags)
        if provenance is not None and Path(provenance).exists():
            self._mlflow.log_artifact(run_id, str(provenance))
        self._mlflow.set_terminated(run_id, status)


def audit_summary(rows: list[Mapping[str, Any]], result: Mapping[str, Any],
                  provenance: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """What a tracker run keeps of the Trial 69 audit and provenance (flat, str/number)."""
    deviations = [r for r in rows if r["match"] is False]
    unexplained = [r["key"] for r in deviations if "UNEXPLAINED" in str(r.get("reason"))]
    keys = ("parameters", "precision_used", "devices_used", "accelerator_used", "strategy",
            "model_class", "model_code_sha256", "data_manifest_sha256", "git_commit", "device",
            "started", "finished")  # fmt: skip
    out = {
        "best_val_loss": result.get("best_val_loss"),
        "epochs_run": result.get("epochs_run"),
        "stopped_early": result.get("stopped_early"),
        "audit.keys": len(rows),
        "audit.deviations": len(deviations),
        "audit.deviation_keys": ",".join(r["key"] for r in deviations),
        "audit.unexplained": ",".join(unexplained),
    }
    out.update({f"provenance.{k}": provenance.get(k) for k in keys})
    return out
