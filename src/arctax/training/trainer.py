"""The Trial 69 Trainer: precision for this machine, callbacks, loggers, processes."""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from arctax.io import atomic_torch_save
from arctax.settings import Trainer, Trial69
from arctax.training.callbacks import EpochMetrics, RNGState

_warned_precision = False
HEADROOM = 0.85  # share of a GPU's memory a job may plan to use (CUDA context, fragmentation)


class SmallerGPU(RuntimeError):
    """A training landed on a GPU with less memory than its smoke test passed on."""


def gpu_card() -> tuple[str, int] | None:
    """This process's GPU: ``(name, total memory in bytes)``, or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0), int(torch.cuda.get_device_properties(0).total_memory)


def check_card(tr: Trainer, model: str, smoke_report: str | Path | None) -> str | None:
    """Compare this GPU with the one ``model``'s smoke test passed on (its report records it).

    Less memory: with ``trainer.smaller_gpu: refuse`` raise :class:`SmallerGPU` naming both
    cards and the fix, unless the smoke test's measured peak (its largest batch) fits this card
    within :data:`HEADROOM`; then, or with ``warn``, return the warning. None: nothing to say
    (no GPU here, no report, a card at least as large)."""
    here = gpu_card()
    if here is None or smoke_report is None or not Path(smoke_report).is_file():
        return None
    import json

    fig = json.loads(Path(smoke_report).read_text())["models"].get(model, {}).get("figures", {})
    there = fig.get("device_memory_bytes")
    if not there or here[1] >= there:
        return None
    gib = lambda n: f"{n / 2**30:.1f} GiB"  # noqa: E731
    peak = fig.get("peak_memory_bytes")
    fits = peak is not None and peak <= HEADROOM * here[1]
    what = (
        f"{model} trains on {here[0]} ({gib(here[1])}), less memory than the "
        f"{fig.get('device')} ({gib(there)}) its smoke test passed on (smoke peak "
        f"{gib(peak) if peak else 'unknown'}"
    )
    fix = (
        "set ARCTAX_GPU_MODEL (profiles/slurm) so smoke_test and train get the same GPU model, "
        "or trainer.devices: 2, or trainer.smaller_gpu: warn to try anyway"
    )
    if tr.smaller_gpu == "refuse" and not fits:
        raise SmallerGPU(f"{what}, more than {HEADROOM:.0%} of this card); fix: {fix}")
    return f"{what}{', which fits' if fits else ''}); {fix}"


def resolve_precision(
    t69: Trial69, tr: Trainer, launch: Launch | None = None
) -> tuple[str, str | None]:
    """The precision the run uses, decided from the accelerator it runs on (``resolve_launch``):
    Trial 69's on CUDA; on the CPU (no CUDA, or ``trainer.accelerator: cpu`` on a GPU node)
    16-mixed cannot run and ``trainer.cpu_precision`` replaces it, with the reason. Passing
    16-mixed to a CPU Trainer would have Lightning swap it for bf16-mixed behind the record."""
    global _warned_precision
    wanted = t69.precision
    launch = launch or resolve_launch(tr, t69)
    if launch.accelerator == "cuda" or "16-mixed" not in wanted or wanted.startswith("bf16"):
        return wanted, None
    used = tr.cpu_precision
    where = (
        "trainer.accelerator: cpu on a machine with CUDA"
        if torch.cuda.is_available()
        else "no CUDA on this machine"
    )
    reason = f"{where}: {wanted} needs a GPU, used {used} (trainer.cpu_precision)"
    if not _warned_precision:
        warnings.warn(f"precision: {reason} (recorded in provenance.json)", stacklevel=2)
        _warned_precision = True
    return used, reason


def compile_model(model: torch.nn.Module, setting: bool | str) -> None:
    """``trainer.compile``: ``torch.compile`` the model IN PLACE (``nn.Module.compile``: its
    parameter names, hence its checkpoints, stay those of the plain model), with the backend
    named (``true``: inductor); ``false`` leaves it."""
    if setting:
        model.compile(backend="inductor" if setting is True else str(setting))


class AtomicCheckpointIO(pl.plugins.TorchCheckpointIO):
    """Checkpoints written to a temp file beside the target, then renamed (arctax.io).

    Lightning's own save renames from the system temp dir, which is a copy, not a rename,
    where /tmp is another file system (node-local /tmp, shared results): a kill during that
    copy would leave half a ``last.ckpt``.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        atomic_torch_save(path, checkpoint)


@dataclass(frozen=True)
class Launch:
    """How many processes train, on what, started by whom (recorded in ``provenance.json``)."""

    accelerator: str  # "cpu" or "cuda"
    devices: int  # processes (one per device), the DDP world size on one node
    strategy: str  # "ddp" or "auto" (one process)
    backend: str | None  # torch.distributed backend: "gloo" (CPU) or "nccl" (CUDA)
    environment: str | None  # "lightning": one task, Lightning starts the other processes;
    #                          "slurm": srun started one task per process
    batch_per_rank: int  # trial69.batch_size / devices
    note: str | None  # what differs from what was asked, and why


def resolve_launch(tr: Trainer, t69: Trial69) -> Launch:
    """The processes ``trainer.accelerator`` and ``trainer.devices`` give on this machine.

    ``trial69.batch_size`` is the GLOBAL batch: N processes take ``batch_size / N`` each, so N
    must divide it. ``devices: N`` never silently becomes 1: without CUDA, ``auto`` runs N CPU
    processes (DDP over gloo) and says so; ``gpu``/``cuda`` without CUDA is an error.
    """
    batch = t69.batch_size
    n, wanted = tr.devices, tr.accelerator
    tr.check_batch_split(batch)
    cuda = torch.cuda.is_available()
    note = None
    if wanted in ("gpu", "cuda") and not cuda:
        raise ValueError(
            f"trainer.accelerator: {wanted}, but torch {torch.__version__} sees no CUDA device "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
            "use accelerator auto or cpu"
        )
    accelerator = "cuda" if cuda and wanted != "cpu" else "cpu"
    if n > 1 and wanted == "auto" and not cuda:
        note = (
            f"trainer.devices: {n} with accelerator auto and no CUDA: "
            f"{n} CPU processes (DDP over gloo), global batch {batch} = {n} x {batch // n}"
        )
    environment = None
    if n > 1:
        # srun started one task per process, or one task holds the devices (the executor
        # plugin's jobs cannot ask for one task per GPU without breaking its srun) and
        # Lightning starts the other processes itself.
        environment = "slurm" if int(os.environ.get("SLURM_NTASKS", "1")) > 1 else "lightning"
    return Launch(
        accelerator=accelerator,
        devices=n,
        strategy="ddp" if n > 1 else "auto",
        backend=None if n == 1 else ("nccl" if accelerator == "cuda" else "gloo"),
        environment=environment,
        batch_per_rank=batch // n,
        note=note,
    )


def build_trainer(
    t69: Trial69,
    tr: Trainer,
    state_dir: Path,
    precision: str,
    extra_callbacks: list[pl.Callback],
    launch: Launch | None = None,
) -> pl.Trainer:
    """The Trial 69 Trainer (precision already resolved for this machine)."""
    launch = launch or resolve_launch(tr, t69)
    es = t69.early_stopping
    tty = sys.stdout.isatty()
    callbacks = [
        pl.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience, mode=es.mode),
        pl.callbacks.ModelCheckpoint(
            dirpath=state_dir,
            filename="best",
            monitor="val_loss",
            mode="min",
            save_top_k=1,
            save_last=True,
            enable_version_counter=False,
        ),
        EpochMetrics(state_dir / "metrics.csv", echo=not tty, max_skipped=tr.max_skipped_steps),
        RNGState(t69.seed),
        *extra_callbacks,
    ]
    # Lightning's per-step CSV log; the trackers of trainer.loggers log each epoch through
    # arctax.training.trackers (one run per model x seed, continued on resume).
    loggers: list[Any] = [
        pl.loggers.CSVLogger(state_dir, name="logs", version=f"run-{time.time_ns()}")
    ]
    plugins: list[Any] = [AtomicCheckpointIO()]
    strategy: Any = "auto"
    if launch.devices > 1:
        from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
        from pytorch_lightning.strategies import DDPStrategy

        # auto_requeue=False: stopping and requeueing is PreemptionGuard's job (exit 75, retry)
        env = SLURMEnvironment(auto_requeue=False) if launch.environment == "slurm" else None
        plugins.append(env or LightningEnvironment())
        strategy = DDPStrategy(process_group_backend=launch.backend)
    return pl.Trainer(
        max_epochs=tr.max_epochs or t69.max_epochs,
        precision=precision,
        gradient_clip_val=t69.gradient_clip_val,
        deterministic=t69.deterministic,
        accelerator=launch.accelerator,
        devices=launch.devices,
        strategy=strategy,
        plugins=plugins,
        use_distributed_sampler=False,  # the length-grouped sampler shards global batches itself
        callbacks=callbacks,
        logger=loggers,
        limit_train_batches=tr.limit_train_batches,
        limit_val_batches=tr.limit_val_batches,
        log_every_n_steps=tr.log_every_n_steps,
        num_sanity_val_steps=0,
        enable_progress_bar=tty,
        enable_model_summary=False,
        default_root_dir=state_dir,
    )
