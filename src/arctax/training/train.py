"""Train one model under Trial 69: resumable, preemption-safe, with provenance.

Outputs (``out_dir``): ``best.ckpt``, ``last.ckpt``, ``metrics.csv``, ``provenance.json``,
written only when training ends normally. Resumable state (``state_dir``) lives outside the
declared outputs so that it survives Snakemake deleting them before a retry. A state whose
training finished (``finished.json``) is not resumed: running again means training again
(a forced re-run, a code fix), from scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from arctax.config import model_config
from arctax.data.datamodule import ARCDataModule
from arctax.data.dataset import load_manifest
from arctax.io import atomic_write, write_json
from arctax.training.callbacks import EpochMetrics, Preempted, PreemptionGuard, RNGState
from arctax.training.module import ARCLitModule
from arctax.training.provenance import audit, built_values, now, provenance_record

log = logging.getLogger(__name__)
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: the job should be retried, and will resume
FINISHED = "finished.json"  # in the state dir: training ended normally, outputs written
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


def deviation_reasons(cfg: Mapping[str, Any], seed: int, precision_reason: str | None):
    """Why a run may differ from the Trial 69 reference, key by key."""
    from arctax.config import flatten
    from arctax.training.provenance import reference_trial69

    ref = dict(flatten(reference_trial69()))
    reasons = {
        k: f"config override: trial69.{k} = {v!r}"
        for k, v in flatten(cfg["trial69"])
        if k in ref and ref[k] != v
    }
    if cfg["trainer"].get("max_epochs"):
        reasons["max_epochs"] = (
            f"config override: trainer.max_epochs = {cfg['trainer']['max_epochs']}"
        )
    if precision_reason:
        reasons["precision"] = precision_reason
    if seed != ref["seed"]:
        reasons["seed"] = f"additional seed {seed} from `seeds` (Trial 69 used {ref['seed']})"
    return reasons


def fingerprint(cfg: Mapping[str, Any], model_name: str, seed: int, manifest_sha: str) -> str:
    """What a resumable state must match to be resumed."""
    blob = json.dumps(
        {
            "model": model_name,
            "model_cfg": model_config(cfg, model_name),
            "trial69": cfg["trial69"],
            "seed": seed,
            "data": manifest_sha,
            "limits": [cfg["trainer"].get(k) for k in ("limit_train_batches", "limit_val_batches")],
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _prepare_state(state_dir: Path, fp: str) -> Path | None:
    """Return the checkpoint to resume from, or None; stale state is set aside, not reused.

    The state of a training that finished is cleared: its results were copied to the outputs,
    and a second run of a finished job is a request to train again, not to resume.
    """
    if (state_dir / FINISHED).exists():
        print(f"{state_dir}: previous training finished; training again from scratch", flush=True)
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    fp_file = state_dir / "fingerprint.txt"
    last = state_dir / "last.ckpt"
    if last.exists() and fp_file.exists() and fp_file.read_text().strip() == fp:
        return last
    if last.exists():
        stale = state_dir.with_name(f"{state_dir.name}.stale-{int(time.time())}")
        warnings.warn(
            f"{state_dir}: state from a different config; moved to {stale}, starting fresh",
            stacklevel=2,
        )
        shutil.move(str(state_dir), stale)
        state_dir.mkdir(parents=True)
    fp_file.write_text(fp + "\n")
    return None


def _copy_atomic(src: Path, dst: Path) -> None:
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


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


def train(
    cfg: Mapping[str, Any],
    model_name: str,
    seed: int,
    data_dir: str | Path,
    out_dir: str | Path,
    state_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` with ``seed`` on the cache in ``data_dir``; see module docstring.

    Raises :class:`SystemExit` with code 75 when stopped by a signal or the Slurm time limit
    (resumable state saved; run again to continue).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    model_config(cfg, model_name)  # an unknown model name fails here, before anything else
    started = now()
    out_dir = Path(out_dir)
    state_dir = Path(state_dir) if state_dir else out_dir.parent / ".state" / out_dir.name
    manifest = load_manifest(data_dir)
    manifest_sha = manifest["inputs_sha256"] + ":" + manifest["config_sha256"]
    resume = _prepare_state(state_dir, fingerprint(cfg, model_name, seed, manifest_sha))

    pl.seed_everything(seed, workers=True)
    precision, precision_reason = resolve_precision(cfg)
    t69 = cfg["trial69"]
    k = cfg["data"]["context_pairs"]
    module = ARCLitModule(model_name, model_config(cfg, model_name), dict(t69), k)
    if cfg["trainer"].get("compile"):
        module.model = torch.compile(module.model)
    dm = ARCDataModule(
        data_dir, model_name, t69["batch_size"], k, cfg["trainer"]["num_workers"], seed
    )
    guard = PreemptionGuard(cfg["trainer"].get("save_margin_s", 300))
    trainer = build_trainer(cfg, state_dir, precision, [guard])
    if resume:
        print(f"resuming {model_name} seed {seed} from {resume}", file=sys.stderr, flush=True)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    except Preempted as e:
        print(
            f"training stopped ({e}); resumable state in {state_dir / 'last.ckpt'} "
            f"(epoch {trainer.current_epoch}); run again to resume",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(PREEMPTED_EXIT) from e
    finally:
        guard.restore()

    ckpt_cb = trainer.checkpoint_callback
    actual = built_values(trainer, t69["batch_size"], seed)
    rows = audit(actual, deviation_reasons(cfg, seed, precision_reason))
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
    _copy_atomic(Path(ckpt_cb.best_model_path), out_dir / "best.ckpt")
    _copy_atomic(state_dir / "last.ckpt", out_dir / "last.ckpt")
    _copy_atomic(state_dir / "metrics.csv", out_dir / "metrics.csv")
    write_json(
        out_dir / "provenance.json",
        provenance_record(
            **result,
            config=dict(cfg),
            audit=rows,
            deviations=[r for r in rows if not r["match"]],
            precision_used=precision,
            data_manifest_sha256=manifest_sha,
            started=started,
            finished=now(),
        ),
    )
    write_json(state_dir / FINISHED, result)
    return result


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
    keeps every attempt's output (why the first one stopped, where the retry resumed).
    """
    state_dir = Path(state_dir)
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    history = state_dir.with_name(f"{state_dir.name}.attempts.log")
    streams = [open(log_path, "a", buffering=1), open(history, "a", buffering=1)]  # noqa: SIM115
    sys.stdout = sys.stderr = _Tee(*streams)
    job = os.environ.get("SLURM_JOB_ID", "none")
    print(f"=== attempt started {now()} on {os.uname().nodename}, Slurm job {job} ===")
    print(f"(every attempt's output: {history})")
