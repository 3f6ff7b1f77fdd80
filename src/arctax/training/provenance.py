"""Provenance: what a run really used, checked key by key against Trial 69 (the recipe here;
its data and the paper's model sizes in :mod:`arctax.training.audit`)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import pytorch_lightning as pl
import torch
import yaml

from arctax.config import DEFAULT_CONFIG, REPO_ROOT
from arctax.settings import Trainer, Trial69, flatten


def reference_trial69() -> dict[str, Any]:
    """The canonical Trial 69 block of ``config/config.yaml`` (the reference of every audit)."""
    return yaml.safe_load(DEFAULT_CONFIG.read_text())["trial69"]


def built_recipe(trainer: pl.Trainer) -> dict[str, Any]:
    """The optimizer, scheduler and clipping values of the objects the run actually built."""
    opt = trainer.optimizers[0]
    group = opt.param_groups[0]
    sched_cfg = trainer.lr_scheduler_configs[0]
    sched = sched_cfg.scheduler
    return {
        "optimizer.name": type(opt).__name__,
        "optimizer.lr": sched.base_lrs[0],
        "optimizer.betas": list(group["betas"]),
        "optimizer.weight_decay": group["weight_decay"],
        "scheduler.name": type(sched).__name__,
        "scheduler.T_0": sched.T_0,
        "scheduler.T_mult": sched.T_mult,
        "scheduler.eta_min": sched.eta_min,
        "scheduler.interval": sched_cfg.interval,
        "gradient_clip_val": trainer.gradient_clip_val,
    }


def built_values(trainer: pl.Trainer, batch_size: int, seed: int) -> dict[str, Any]:
    """Trial 69 keys read back from the objects the run actually built."""
    es = next(c for c in trainer.callbacks if isinstance(c, pl.callbacks.EarlyStopping))
    return {
        **built_recipe(trainer),
        "batch_size": batch_size,
        "precision": trainer.precision,
        "early_stopping.monitor": es.monitor,
        "early_stopping.patience": es.patience,
        "early_stopping.mode": es.mode,
        "seed": seed,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "max_epochs": trainer.max_epochs,
    }


def audit(
    actual: Mapping[str, Any],
    reasons: Mapping[str, str],
    reference: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per Trial 69 key: expected, actual, match, and the reason of any deviation."""
    ref = dict(flatten(reference or reference_trial69()))
    rows = []
    for key, expected in ref.items():
        got = actual.get(key)
        ok = _same(expected, got)
        reason = "" if ok else reasons.get(key, "UNEXPLAINED deviation")
        rows.append(
            {"key": key, "expected": expected, "actual": got, "match": ok, "reason": reason}
        )
    return rows


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """Commit of the code that ran (with ``-dirty`` when the tree had changes), if in git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(accelerator: str | None = None) -> dict[str, Any]:
    """Versions, device and cluster facts of this process; ``device`` is the one the run used
    (``accelerator``: a GPU node's CPU run records the CPU), by default the GPU if any."""
    cuda = torch.cuda.is_available() if accelerator is None else accelerator == "cuda"
    return {
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "pytorch_lightning": pl.__version__,
            "snakemake": _version("snakemake"),
            "arctax": _version("arctax"),
        },
        "device": torch.cuda.get_device_name(0)
        if cuda
        else f"cpu ({platform.processor() or platform.machine()})",
        "cuda": torch.version.cuda if cuda else None,
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_node": os.environ.get("SLURMD_NODENAME"),
        "git_commit": git_commit(),
    }


def now() -> str:
    """UTC timestamp."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def provenance_record(**fields: Any) -> dict[str, Any]:
    """Assemble ``provenance.json``; ``fields`` carry config, audit, times, results."""
    rec = {"reference": "Trial 69 (champion_bootstrap.ckpt recipe, config/config.yaml trial69)"}
    rec.update(fields)
    rec.update(environment(fields.get("accelerator_used")))
    return rec


def deviation_reasons(
    t69: Trial69, tr: Trainer, preset: str | None, seed: int, precision_reason: str | None
) -> dict[str, str]:
    """Why a run may differ from the Trial 69 reference, key by key (``preset``: the
    config's, named in the reasons of its overrides)."""
    ref = dict(flatten(reference_trial69()))
    from arctax.training.audit import override

    reasons = {
        k: override(preset, f"trial69.{k}", v)
        for k, v in flatten(t69.as_dict())
        if k in ref and ref[k] != v
    }
    if max_epochs := tr.max_epochs:
        reasons["max_epochs"] = override(preset, "trainer.max_epochs", max_epochs)
    if precision_reason:
        reasons["precision"] = precision_reason
    if seed != ref["seed"]:
        reasons["seed"] = f"additional seed {seed} from `seeds` (Trial 69 used {ref['seed']})"
    return reasons
