"""Train one model under Trial 69: resumable, preemption-safe, with provenance.

Outputs (``out_dir``): ``best.ckpt``, ``last.ckpt``, ``metrics.csv``, ``provenance.json``,
written only when training ends normally. Resumable state (``state_dir``) lives outside the
declared outputs so that it survives Snakemake deleting them before a retry: the job's
:class:`~arctax.lifecycle.JobState`, resumed whole from ``last.ckpt`` when its fingerprint
(:func:`training_fingerprint`) matches. A state whose training finished is not resumed: running
again means training again (a forced re-run, a code fix), from scratch. The Trainer is built in
:mod:`arctax.training.trainer`; job logs are kept by :mod:`arctax.training.logs`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from arctax.data.datamodule import ARCDataModule
from arctax.data.dataset import load_manifest
from arctax.io import copy_atomic, file_sha256, write_json
from arctax.lifecycle import STOPPED_EXIT, JobState, Stopped, fingerprint, stop_line
from arctax.models import count_parameters, rung_options
from arctax.plugins import source_sha256
from arctax.settings import Model, Settings, Trainer, Trial69
from arctax.training.audit import data_audit, model_audit
from arctax.training.callbacks import PreemptionGuard
from arctax.training.logs import attach_log
from arctax.training.module import ARCLitModule
from arctax.training.provenance import (
    audit,
    built_values,
    deviation_reasons,
    now,
    provenance_record,
)
from arctax.training.ranks import join_ranks, process_rank
from arctax.training.trackers import Trackers, audit_summary
from arctax.training.trainer import (
    Launch,
    build_trainer,
    check_card,
    compile_model,
    resolve_launch,
    resolve_precision,
)

__all__ = ["FINISHED", "attach_log", "build_trainer", "train", "training_fingerprint"]

FINISHED = "finished.json"  # in the state dir: training ended normally, outputs written
OUTPUTS = ("best.ckpt", "last.ckpt", "metrics.csv", "provenance.json")  # in out_dir
RESUME = "last.ckpt"  # in the state dir: the checkpoint of the last finished epoch


def training_fingerprint(
    model: Model, t69: Trial69, tr: Trainer, seed: int, manifest_sha: str
) -> str:
    """What a training's resumable state must match to be resumed."""
    return fingerprint(
        {
            "model": model.name,
            "model_cfg": model.config(),
            "model_class": model.cls,
            "model_code": source_sha256(model.cls),
            "trial69": t69.as_dict(),
            "seed": seed,
            "data": manifest_sha,
            "limits": [tr.limit_train_batches, tr.limit_val_batches],
            "compile": tr.compile,  # compiled kernels round differently: no resume across it
        }
    )


def train(
    s: Settings,
    model_name: str,
    seed: int,
    data_dir: str | Path,
    out_dir: str | Path,
    state_dir: str | Path | None = None,
    trackers_dir: str | Path | None = None,
    smoke_report: str | Path | None = None,
) -> dict[str, Any]:
    """Train model ``model_name`` of ``s`` with ``seed`` on the cache in ``data_dir``; see the
    module docstring.

    The trackers of ``trainer.loggers`` write under ``trackers_dir`` (default
    ``results/<run>/trackers``, the workflow's; :mod:`arctax.training.trackers`). On a GPU
    with less memory than the one ``smoke_report`` (the model's smoke test) passed on, it
    refuses or warns (``trainer.smaller_gpu``; :func:`~arctax.training.trainer.check_card`).

    Raises :class:`SystemExit` with code 75 when stopped by a signal or the Slurm time limit
    (resumable state saved; run again to continue). Under DDP (``trainer.devices`` > 1) every
    rank runs this function; rank 0 alone writes outputs and resumable state.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    model = s.model(model_name)  # an unknown model name fails here, before anything else
    t69, tr = s.trial69, s.trainer
    tr.check_trackers()  # and a tracker whose extra is not installed
    launch = resolve_launch(tr, t69)  # and devices that cannot split the batch
    # and a GPU smaller than the one the smoke test passed on
    card_note = check_card(tr, model_name, smoke_report) if launch.accelerator == "cuda" else None
    rank = process_rank() if launch.devices > 1 else 0
    started = now()
    out_dir = Path(out_dir)
    state_dir = Path(state_dir) if state_dir else out_dir.parent / ".state" / out_dir.name
    manifest = load_manifest(data_dir)
    manifest_sha = manifest["inputs_sha256"] + ":" + manifest["config_sha256"]
    fp = training_fingerprint(model, t69, tr, seed, manifest_sha)
    job = JobState(state_dir, fp, tr.save_margin_s, job="training")

    # One writer: rank 0 owns the state (under DDP the other ranks are the same job); a copy
    # of this job started while another still trains waits for it, then adopts its result.
    def work() -> dict[str, Any]:
        return _train(s, model, seed, data_dir, out_dir, job, rank, launch, card_note,
                      manifest, trackers_dir, started)  # fmt: skip

    if rank != 0:
        return work()
    return job.run(work, FINISHED, [out_dir / f for f in OUTPUTS], adopt=lambda result: result)


def _train(
    s: Settings,
    model: Model,
    seed: int,
    data_dir: str | Path,
    out_dir: Path,
    job: JobState,
    rank: int,
    launch: Launch,
    card_note: str | None,
    manifest: Mapping[str, Any],
    trackers_dir: str | Path | None,
    started: str,
) -> dict[str, Any]:
    """:func:`train`'s work, by the job's one writer (and, under DDP, its other ranks)."""
    t69, tr, state_dir, model_name = s.trial69, s.trainer, job.folder, model.name
    manifest_sha = manifest["inputs_sha256"] + ":" + manifest["config_sha256"]
    # Rank 0 alone sets stale state aside and clears a finished one; the others only read.
    resume = job.begin(RESUME, FINISHED) if rank == 0 else job.resume_point(RESUME, FINISHED)
    if launch.note and rank == 0:
        warnings.warn(f"devices: {launch.note} (recorded in provenance.json)", stacklevel=2)
    if card_note and rank == 0:
        warnings.warn(f"GPU: {card_note}", stacklevel=2)

    pl.seed_everything(seed, workers=True)
    precision, precision_reason = resolve_precision(t69, tr, launch)
    k = s.data.context_pairs
    module = ARCLitModule.for_model(model, t69, k)
    fmt = module.model.fmt  # the batch format the model consumes
    n_params = count_parameters(module.model)
    compile_model(module.model, tr.compile)  # in place: checkpoint keys unchanged
    dm = ARCDataModule(  # the global batch: each of N ranks takes batch_size / N
        data_dir, fmt, t69.batch_size, k, tr.num_workers, seed
    )
    guard = PreemptionGuard(job.stop)  # Lightning installs handlers of its own: asked per batch
    trackers = Trackers(
        s, model_name, seed, state_dir,
        trackers_dir or Path("results") / str(s.run) / "trackers",
        {"parameters": n_params, "precision": precision, "devices": launch.devices},
    )  # fmt: skip
    trainer = build_trainer(t69, tr, state_dir, precision, [guard, trackers], launch)
    if str(trainer.precision) != precision:  # Lightning changed it: record what it runs
        precision_reason = f"{precision_reason or precision}; Lightning ran {trainer.precision}"
        precision = str(trainer.precision)
    trackers.params["precision"] = precision  # one value in provenance, trackers and audit
    if resume:
        print(f"resuming {model_name} seed {seed} from {resume}", file=sys.stderr, flush=True)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    except Stopped as e:
        trackers.finish("KILLED")  # stopped to be resumed: the next attempt continues the runs
        saved = (
            f"resumable state in {state_dir / RESUME} (epoch {trainer.current_epoch}); "
            "run again to resume"
        )
        print(stop_line("training", str(e), saved), file=sys.stderr, flush=True)
        join_ranks(trainer)
        # The job's exit code is rank 0's. Other ranks exit 0 after this agreed stop: to
        # Lightning's launcher a rank exiting non-zero is a crash, on which it SIGKILLs rank 0.
        raise SystemExit(STOPPED_EXIT if trainer.global_rank == 0 else 0) from e
    except BaseException:
        trackers.finish("FAILED")
        raise
    finally:
        guard.restore()

    ckpt_cb = trainer.checkpoint_callback
    actual = built_values(trainer, dm.batch_size, seed)
    rows = audit(actual, deviation_reasons(t69, tr, s.preset, seed, precision_reason))
    options = rung_options(model_name, model.config(), model.cls)
    rows += data_audit(s.data, s.preset, manifest) + model_audit(model, s.preset, n_params, options)
    best_score = ckpt_cb.best_model_score
    result = {
        "model": model_name,
        "seed": seed,
        "epochs_run": trainer.current_epoch,
        "best_val_loss": float(best_score) if best_score is not None else None,
        "resumed_from": str(resume) if resume else None,
        "stopped_early": trainer.early_stopping_callback.stopped_epoch > 0,
    }
    if trainer.global_rank != 0:
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_atomic(Path(ckpt_cb.best_model_path), out_dir / "best.ckpt")
    copy_atomic(state_dir / RESUME, out_dir / "last.ckpt")
    copy_atomic(state_dir / "metrics.csv", out_dir / "metrics.csv")
    record = provenance_record(
        **result,
        config=s.as_dict(),
        audit=rows,
        deviations=[r for r in rows if r["match"] is False],
        parameters=n_params,
        data=data_record(manifest),
        precision_used=precision,
        model_class=model.cls,  # None: built in
        model_code_sha256=source_sha256(model.cls),
        **processes(trainer, tr, launch),
        gpu_note=card_note,
        data_manifest_sha256=manifest_sha,
        # what makes these weights "trained here" (evaluation.checkpoints.trained_here_flag)
        checkpoints_sha256={n: file_sha256(out_dir / n) for n in ("best.ckpt", "last.ckpt")},
        started=started,
        finished=now(),
    )
    write_json(out_dir / "provenance.json", record)
    trackers.finish("FINISHED", audit_summary(rows, result, record), out_dir / "provenance.json")
    job.mark_done(FINISHED, result, [out_dir / f for f in OUTPUTS])
    join_ranks(trainer)
    return result


def data_record(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What the run trained on, from the training data's manifest."""
    keys = ("source", "source_kind", "version", "examples_per_task", "held_out_fraction",
            "inputs_sha256", "config_sha256")  # fmt: skip
    rec = {k: manifest.get(k) for k in keys}
    rec["counts"] = {s: manifest["counts"][s] for s in ("train", "val")}
    rec["short_tasks"] = manifest.get("short_tasks") or {}
    return rec


def processes(trainer: pl.Trainer, tr: Trainer, launch: Launch) -> dict[str, Any]:
    """What ran, read back from the Trainer: processes, devices, DDP backend, batch split."""
    strategy = trainer.strategy
    env = getattr(strategy, "cluster_environment", None)
    return {
        "devices_requested": tr.devices,
        "accelerator_requested": tr.accelerator,
        "devices_used": trainer.world_size,
        "accelerator_used": launch.accelerator,
        "strategy": type(strategy).__name__,
        "process_group_backend": getattr(strategy, "process_group_backend", None),
        "cluster_environment": type(env).__name__ if trainer.world_size > 1 else None,
        "batch_size_per_rank": launch.batch_per_rank,
        "devices_note": launch.note,
    }
