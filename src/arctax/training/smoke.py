"""Smoke test: each model through the training path for seconds, before hours of training.

Per model, what its ``train`` job runs: the same Trainer factory (:func:`build_trainer`:
precision for this machine, ``deterministic``, accelerator, devices and DDP, callbacks,
atomic checkpoints) and the same LightningModule, for a few optimizer steps alternating the
prepared training split's LARGEST global batch (most tokens: the memory worst case) and a
typical one (the median length), then one validation batch. On a GPU node that is the train
job's code on CUDA (16-mixed, deterministic algorithms); on CPU the same code under
``trainer.cpu_precision``. Models come from the config (``models:``), built by
``build_model`` and batched in their own ``model.fmt``.

Checks (``"ok"`` or what is wrong and the fix; :mod:`arctax.training.smoke_checks`):
``finite_loss``, ``finite_grads`` (every parameter, unscaled), ``nonzero_grads``,
``grad_scale`` (where a grad scaler exists: it did not collapse), ``step_changes_weights``,
``checkpoint_reload`` (the run's own ``last.ckpt`` loaded with ``weights_only=True`` gives
bitwise the same logits), ``kv_cache_decode`` (greedy decoding with the cache gives the
naive loop's tokens), ``identical_steps`` (two identical steps on the largest batch give
bitwise-equal gradients) and ``trial69_recipe`` (the optimizer, scheduler and clipping the
Trainer built are the run's ``trial69``; where that differs from Trial 69 itself, e.g. a
search's best.yaml, the report lists it under ``trial69_deviations``: recorded, not failed)
and ``fused_attention`` (no call site ran the math kernel on CUDA). The steps run under
:func:`arctax.models.layers.watch_attention`: on CUDA a call that would fall back to the math
kernel fails the ``runs`` check naming its call site and shapes. A crash is a failed ``runs``
check naming the op, where and the fix. Figures: device and its memory (the report's
``card``, which ``train`` compares with its own), precision (and why), deterministic, peak
memory, step times, batch tokens, the kernel of each attention call site, grad scale.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from arctax.data.collate import Batch, collate
from arctax.data.dataset import PreparedSplit, load_split
from arctax.io import write_json
from arctax.models import count_parameters, size_flags
from arctax.models.layers import watch_attention
from arctax.settings import Settings, Trainer, Trial69, flatten
from arctax.training.module import ARCLitModule
from arctax.training.provenance import _same, built_recipe, reference_trial69
from arctax.training.ranks import join_ranks, process_rank
from arctax.training.smoke_checks import (
    OK,
    StepProbe,
    decode_check,
    device_name,
    explain,
    identical_steps,
    judge_steps,
    math_sites,
    protocol_check,
    reload_check,
    site_kernels,
    weights_changed,
)
from arctax.training.trainer import build_trainer, resolve_launch, resolve_precision

STEPS = ("largest", "normal", "largest", "normal")  # optimizer steps, by batch


def _context_cells(ds: PreparedSplit) -> np.ndarray:
    """Cells of every example's context grids (the champion's context encoder reads them)."""
    ctx = ds.ex_grids[:, 2:]
    cells = np.where(ctx >= 0, ds.h[np.maximum(ctx, 0)] * ds.w[np.maximum(ctx, 0)], 0)
    return cells.max(axis=1) if cells.shape[1] else np.zeros(len(ds), dtype=np.int64)


def pick_batches(ds: PreparedSplit, fmt: str, batch_size: int) -> dict[str, list[int]]:
    """Example indices of the largest global batch and of a typical one.

    Largest: the examples with the longest source, target, source + target and context grid
    and the longest by the format's length key, then the next longest by that key. A batch
    is padded to its longest of each, so no batch of ``batch_size`` has more padded tokens
    in any format: the memory worst case training can meet. Normal: ``batch_size`` examples
    around the median length.
    """
    key = ds.lengths(fmt)
    order = np.argsort(key, kind="stable")
    n = min(batch_size, len(order))
    s, t = ds.token_lengths()
    longest = [int(np.argmax(a)) for a in (key, s, t, s + t, _context_cells(ds))]
    largest = list(dict.fromkeys(longest + order[::-1].tolist()))[:n]
    lo = min(max(len(order) // 2 - n // 2, 0), len(order) - n)
    return {"largest": largest, "normal": order[lo : lo + n].tolist()}


def batch_tokens(batch: Batch) -> dict[str, int]:
    """Samples, real and padded tokens of a batch (every token tensor, the context included)."""
    keys = [k for k in ("src", "tgt_in", "seq", "ctx") if k in batch]
    masks = {"src": "src_mask", "tgt_in": "tgt_mask", "seq": "seq_mask", "ctx": "ctx_mask"}
    return {
        "samples": int(batch["labels"].shape[0]),
        "real_tokens": int(sum(batch[masks[k]].sum() for k in keys)),
        "padded_tokens": int(sum(batch[k].numel() for k in keys)),
    }


class SmokeData(pl.LightningDataModule):
    """The smoke steps' batches; under DDP each rank takes ``batch[rank::world]``, as the
    length-grouped sampler shards a global batch."""

    def __init__(self, ds: PreparedSplit, fmt: str, k: int, picks: Mapping[str, list[int]]) -> None:
        super().__init__()
        self.ds, self.fmt, self.k, self.picks = ds, fmt, k, dict(picks)

    def batch(self, kind: str) -> Batch:
        """This process's share of the ``kind`` global batch."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        idx = self.picks[kind][rank::world] or self.picks[kind][:1]
        return collate([self.ds[i] for i in idx], self.fmt, self.k)

    def train_dataloader(self) -> DataLoader:
        return DataLoader([self.batch(s) for s in STEPS], batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader([self.batch("normal")], batch_size=None)


def _smoke_trainer(tr: Trainer) -> Trainer:
    """The run's trainer block as a one-epoch Trainer over exactly the smoke batches."""
    return tr.replace(
        max_epochs=1, limit_train_batches=None, limit_val_batches=None, log_every_n_steps=1
    )


def _recipe_checks(trainer: pl.Trainer, t69: Trial69) -> tuple[list[str], list[str]]:
    """``(problems, deviations)``: built values that differ from the run's own ``trial69``
    (a bug: the factory ignored the config), and configured values that differ from Trial 69
    itself (a deliberate override, e.g. a search's best.yaml: recorded, not a failure)."""
    built = built_recipe(trainer)
    mine, ref = dict(flatten(t69.as_dict())), dict(flatten(reference_trial69()))
    problems = [
        f"{k}: built {v!r}, the config's trial69 says {mine[k]!r}"
        for k, v in built.items()
        if not _same(v, mine[k])
    ]
    deviations = [
        f"{k}: {mine[k]!r} (Trial 69: {ref[k]!r})" for k in built if not _same(mine[k], ref[k])
    ]
    return problems, deviations


def _guarded(fn: Callable[..., str], *args: Any) -> str:
    try:
        return fn(*args)
    except Exception as e:  # a crash in a check is that check failing, said like the others
        return explain(e)


def smoke_model(
    name: str,
    s: Settings,
    ds: PreparedSplit,
    work_dir: str | Path,
    trainers: list[pl.Trainer] | None = None,
) -> dict[str, Any]:
    """Run model ``name`` of ``s`` through the training path; ``{"ok", "checks", "figures",
    ...}``.

    ``trainers``, if empty, receives the Trainer (whose launcher holds the DDP processes).
    """
    t0 = time.perf_counter()
    t69, tr, k = s.trial69, s.trainer, s.data.context_pairs
    launch = resolve_launch(tr, t69)
    precision, reason = resolve_precision(t69, tr, launch)
    figures: dict[str, Any] = {
        "precision": precision,
        "precision_note": reason,
        "accelerator": launch.accelerator,
        "devices": launch.devices,
        "process_group_backend": launch.backend,
    }
    largest = "the largest batch"
    try:
        pl.seed_everything(t69.seed, workers=True, verbose=False)
        module = ARCLitModule.for_model(s.model(name), t69, k)
        fmt = module.model.fmt
        picks = pick_batches(ds, fmt, t69.batch_size)
        figures["batches"] = {
            kind: batch_tokens(collate([ds[i] for i in idx], fmt, k)) for kind, idx in picks.items()
        }
        big = figures["batches"]["largest"]
        largest = f"the largest batch ({big['samples']} samples, {big['padded_tokens']} tokens)"
        data = SmokeData(ds, fmt, k, picks)
        probe = StepProbe(list(STEPS))
        trainer = build_trainer(t69, _smoke_trainer(tr), Path(work_dir), precision, [probe], launch)
        if trainers is not None and not trainers:  # the first one started the DDP ranks
            trainers.append(trainer)
        figures["deterministic"] = torch.are_deterministic_algorithms_enabled()
        before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
        with watch_attention() as watch:  # on CUDA a math-kernel call fails, naming its site
            trainer.fit(module, datamodule=data)
    except Exception as e:  # the training path crashed: one failed check, with the fix
        return {"ok": False, "checks": {"runs": explain(e, largest)}, "figures": figures}

    dev = probe.device or torch.device("cpu")
    module.to(dev)  # Lightning's teardown moved it back to the CPU
    model, plugin = module.model, trainer.precision_plugin
    has_scaler = getattr(plugin, "scaler", None) is not None
    checks = judge_steps(probe.steps, precision, has_scaler)
    checks["step_changes_weights"] = weights_changed(before, model)
    to_dev = lambda b: {key: v.to(dev) for key, v in b.items()}  # noqa: E731
    normal, big_batch = to_dev(data.batch("normal")), to_dev(data.batch("largest"))
    if trainer.global_rank == 0:  # rank 0 wrote it; the others have nothing to check
        checks["checkpoint_reload"] = _guarded(
            reload_check,
            Path(trainer.checkpoint_callback.dirpath) / "last.ckpt",
            model,
            normal,
            s.models,
            s.limits,
        )
    checks["protocol"] = _guarded(protocol_check, model, normal)
    checks["kv_cache_decode"] = _guarded(decode_check, model, normal)
    with watch_attention():
        checks["identical_steps"] = _guarded(identical_steps, model, big_batch, plugin)
    figures["attention"] = site_kernels(watch)  # every call site of the steps, its kernels
    bad = math_sites(figures["attention"], dev.type)
    checks["fused_attention"] = (
        OK
        if not bad
        else (
            f"the math kernel ran at {'; '.join(bad)} (it keeps the whole attention matrix: "
            "out of memory at full size); see arctax.models.layers"
        )
    )
    problems, deviations = _recipe_checks(trainer, t69)
    checks["trial69_recipe"] = OK if not problems else "; ".join(problems)
    figures["trial69_deviations"] = deviations

    by_kind = {s.batch: s.seconds for s in probe.steps}  # the last (warm) step of each kind
    scales = [s.scale for s in probe.steps if s.scale is not None]
    figures.update(
        device=device_name(dev),
        device_memory_bytes=(
            torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda" else None
        ),
        peak_memory_bytes=probe.peak[0],
        peak_memory_method=probe.peak[1],
        step_seconds=by_kind,
        grad_scale=scales[-1] if scales else None,
        steps=[s.as_dict() for s in probe.steps],
        seconds=round(time.perf_counter() - t0, 2),
    )
    first = probe.steps[0].loss if probe.steps else None
    module.cpu()  # the next model's peak memory starts without this one
    return {
        "ok": all(v == OK for v in checks.values()),
        "checks": checks,
        "figures": figures,
        "loss": first,
        "parameters": count_parameters(model),
    }


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


def format_table(report: Mapping[str, Any]) -> str:
    """The report as plain text: one row per model and check, its figures, every failure."""
    models = report["models"]
    names = list(dict.fromkeys(n for r in models.values() for n in r["checks"]))
    width = max(len(n) for n in names) + 1 if names else 8
    lines = [f"{'model':<16} " + " ".join(f"{n:<{width}}" for n in names)]
    for m, r in models.items():
        cells = [{"ok": "ok", None: "-"}.get(r["checks"].get(n), "FAIL") for n in names]
        lines.append(f"{m:<16} " + " ".join(f"{c:<{width}}" for c in cells))
    for m, r in models.items():
        f = r.get("figures", {})
        if "device" not in f:
            continue
        steps = f.get("step_seconds", {})
        lines.append(
            f"{m}: {f['device']}"
            + (f" x {f['devices']} (DDP, {f['process_group_backend']})" if f["devices"] > 1 else "")
            + f", {f['precision']}, deterministic {f.get('deterministic')}, "
            f"peak {_mib(f.get('peak_memory_bytes'))} ({f.get('peak_memory_method')}), step "
            + ", ".join(f"{kind} {s:.3f}s" for kind, s in steps.items())
            + f", largest batch {f['batches']['largest']['padded_tokens']} tokens, attention "
            + "/".join(sorted({k for v in f.get("attention", {}).values() for k in v.split("/")}))
            + f" ({len(f.get('attention', {}))} call sites)"
            + (f", grad scale {f['grad_scale']:g}" if f.get("grad_scale") is not None else "")
        )
        if f.get("trial69_deviations"):
            lines.append(f"{m}: deviates from Trial 69: " + "; ".join(f["trial69_deviations"]))
    counts = {m: r["parameters"] for m, r in models.items() if r.get("parameters")}
    base = counts.get("champion")
    if counts:
        lines.append(
            "parameters: "
            + ", ".join(
                f"{m} {n:,}" + (f" ({n / base - 1:+.1%} vs champion)" if base else "")
                for m, n in counts.items()
            )
        )
    for line in size_flags(counts).values():
        lines.append(f"FLAG {line}")
    for m, r in models.items():
        for n, v in r["checks"].items():
            if v != "ok":
                lines.append(f"FAIL {m} / {n}: {v}")
    return "\n".join(lines)


def smoke_test(
    s: Settings,
    data_dir: str | Path,
    out_json: str | Path | None = None,
    models: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Smoke-test ``models`` (default: every model of the config) on the prepared cache.

    Under DDP (``trainer.devices`` > 1) every rank runs this; rank 0 alone writes ``out_json``.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts
    ds = load_split(data_dir, "train")
    results, trainers = {}, []
    for name in list(models) if models is not None else list(s.models):
        with tempfile.TemporaryDirectory(prefix=f"arctax-smoke-{name}-") as work:
            results[name] = smoke_model(name, s, ds, work, trainers)
    report = {"ok": all(m["ok"] for m in results.values()), "card": _card(results),
              "models": results}  # fmt: skip
    rank = process_rank()  # after the first fit: Lightning's launcher has set it
    if rank == 0 and trainers:
        join_ranks(trainers[0])  # the DDP processes Lightning started, if any
    if out_json is not None and rank == 0:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out_json), report)
    return report


def _card(models: Mapping[str, Any]) -> dict[str, Any] | None:
    """The GPU the smoke test ran on (name, memory), from the first model that got that far;
    ``train`` compares its own with it (``trainer.smaller_gpu``). None on the CPU."""
    for r in models.values():
        f = r.get("figures", {})
        if f.get("device_memory_bytes"):
            return {"name": f["device"], "memory_bytes": f["device_memory_bytes"]}
    return None


def merge_reports(paths: list[str | Path], out_json: str | Path) -> dict[str, Any]:
    """Combine per-model smoke reports into one (``ok`` only if every model passed)."""
    models: dict[str, Any] = {}
    for p in paths:
        models.update(json.loads(Path(p).read_text())["models"])
    counts = {m: r["parameters"] for m, r in models.items() if r.get("parameters")}
    report = {"ok": all(m["ok"] for m in models.values()), "card": _card(models),
              "models": models, "size_flags": size_flags(counts)}  # fmt: skip
    write_json(Path(out_json), report)
    return report
