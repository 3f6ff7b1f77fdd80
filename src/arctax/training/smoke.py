"""Smoke test of the three models: forward, loss, backward, gradients, one step, Trial 69.

Runs in seconds on CPU with a tiny config; on the cluster it is the first GPU job, so a
broken model or recipe fails before hours of training are queued.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from arctax.config import model_class, model_config, model_names
from arctax.data.collate import collate
from arctax.data.dataset import load_split
from arctax.io import write_json
from arctax.models import build_model, count_parameters
from arctax.training.module import answer_metrics
from arctax.training.optim import build_optimizer, build_scheduler
from arctax.training.provenance import reference_trial69


def _trial69_checks(opt: torch.optim.Optimizer, sched: dict[str, Any]) -> list[str]:
    """Problems of the built optimizer/scheduler against the Trial 69 reference."""
    ref = reference_trial69()
    o, s = ref["optimizer"], ref["scheduler"]
    g, sc = opt.param_groups[0], sched["scheduler"]
    got = {
        "optimizer": (type(opt).__name__, o["name"]),
        "lr": (g["lr"], o["lr"]),
        "betas": (list(g["betas"]), list(o["betas"])),
        "weight_decay": (g["weight_decay"], o["weight_decay"]),
        "scheduler": (type(sc).__name__, s["name"]),
        "T_0": (sc.T_0, s["T_0"]),
        "T_mult": (sc.T_mult, s["T_mult"]),
        "eta_min": (sc.eta_min, s["eta_min"]),
    }
    return [f"{k}: {a!r} != Trial 69 {b!r}" for k, (a, b) in got.items() if a != b]


def smoke_model(
    name: str, cfg: Mapping[str, Any], batch: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Run every check on model ``name``; return ``{check: ok/message}`` and figures."""
    torch.manual_seed(0)
    model = build_model(name, model_config(cfg, name), model_class(cfg, name))
    model.train()
    opt = build_optimizer(model.parameters(), cfg["trial69"])
    sched = build_scheduler(opt, cfg["trial69"])
    checks: dict[str, str] = {}
    loss = answer_metrics(model(batch), batch["labels"])["loss"]
    checks["finite_loss"] = "ok" if math.isfinite(loss.item()) else f"loss is {loss.item()}"
    loss.backward()
    bad = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    zero = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and p.grad is not None and not p.grad.abs().sum() > 0
    ]
    checks["finite_grads"] = "ok" if not bad else f"no/non-finite grad: {', '.join(bad[:5])}"
    checks["nonzero_grads"] = "ok" if not zero else f"all-zero grad: {', '.join(zero[:5])}"
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    checks["step_changes_weights"] = "ok" if changed else "no parameter changed"
    problems = _trial69_checks(opt, sched)
    checks["trial69_recipe"] = "ok" if not problems else "; ".join(problems)
    return {
        "ok": all(v == "ok" for v in checks.values()),
        "checks": checks,
        "loss": loss.item(),
        "parameters": count_parameters(model),
    }


def format_table(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table (one row per model, one column per check)."""
    models = report["models"]
    names = list(dict.fromkeys(n for r in models.values() for n in r["checks"]))
    lines = [f"{'model':<16} " + " ".join(f"{n:<21}" for n in names)]
    for m, r in models.items():
        cells = [{"ok": "ok", None: "-"}.get(r["checks"].get(n), "FAIL") for n in names]
        lines.append(f"{m:<16} " + " ".join(f"{c:<21}" for c in cells))
    for m, r in models.items():
        for n, v in r["checks"].items():
            if v != "ok":
                lines.append(f"FAIL {m} / {n}: {v}")
    return "\n".join(lines)


def smoke_test(
    cfg: Mapping[str, Any],
    data_dir: str | Path,
    out_json: str | Path | None = None,
    models: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Smoke-test ``models`` (default: the config's) on a real batch of the prepared cache."""
    ds = load_split(data_dir, "train")
    examples = [ds[i] for i in range(min(4, len(ds)))]
    k = cfg["data"]["context_pairs"]
    results = {}
    for name in models or model_names(cfg):
        try:
            fmt = build_model(name, model_config(cfg, name), model_class(cfg, name)).fmt
            batch = collate(examples, fmt, k)
            results[name] = smoke_model(name, cfg, batch)
        except Exception as e:  # a crash is a failed check, reported like the others
            results[name] = {"ok": False, "checks": {"runs": f"{type(e).__name__}: {e}"}}
    report = {"ok": all(m["ok"] for m in results.values()), "models": results}
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out_json), report)
    return report


def merge_reports(paths: list[str | Path], out_json: str | Path) -> dict[str, Any]:
    """Combine per-model smoke reports into one (``ok`` only if every model passed)."""
    import json

    models: dict[str, Any] = {}
    for p in paths:
        models.update(json.loads(Path(p).read_text())["models"])
    report = {"ok": all(m["ok"] for m in models.values()), "models": models}
    write_json(Path(out_json), report)
    return report
