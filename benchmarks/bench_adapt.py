"""Adaptation throughput: adapted test tasks per second, and the levers tried.

Every variant adapts the same ARC-AGI-1 evaluation tasks with the same settings (the
champion, LoRA on q/kv/out/mlp, ``adapt_steps`` steps, 4 augmented and 4 voting views, random
base weights; answers capped at 60 tokens so a rambling random model costs every variant the
same). Variants run interleaved task group by task group:

- one task per batch (``adapt.tasks_per_batch: 1``, the default);
- four tasks per batch: four adapters in one batched forward (the lever);
- voting alone (0 steps): the cost of answering under the views, without fitting;
- the shipped method (the schema's adapt defaults: 8 + 8 dihedral views, up to 256 steps
  chosen per task on 3 held-out folds by exact answers then cell accuracy, the base answers
  kept as candidates) beside an old default (12 fixed steps, 4 + 4 colour views, no
  selection). With random weights no held-out answer is ever exact: a task stops after its
  patience unless its held-out cells keep improving, when it trains the whole budget.
"""

from __future__ import annotations

from typing import Any

import torch
from harness import Row, Timed, interleave

from arctax.adaptation.lora import inject_lora
from arctax.adaptation.run import task_data
from arctax.adaptation.ttt import adapt_tasks, adapter_slots
from arctax.config import DEFAULT_CONFIG, REPO_ROOT
from arctax.data.dataset import PreparedSplit
from arctax.models import build_model
from arctax.settings import Adapt, Settings, load_settings

MAX_NEW = 60
TARGETS = ["q", "kv", "out", "mlp"]


# the levers' variants: fixed steps, 4 + 4 colour views, no selection, adapted answers only
LEVER = {"seed": 0, "voting_views": 4, "augment_views": 4, "lr": 1e-3, "batch_size": 8,
         "attempts": 2, "rank": 8, "alpha": 16.0, "targets": TARGETS, "colour_views": True,
         "select": "none", "pool": "adapted", "scoring": "votes"}  # fmt: skip
FORMER = {"seed": 0, "rank": 4, "alpha": 8, "targets": TARGETS, "steps": 12, "lr": 3e-3,
          "batch_size": 16, "augment_views": 4, "voting_views": 4, "attempts": 2,
          "colour_views": True, "select": "none", "pool": "adapted", "scoring": "votes"}  # fmt: skip


def _demo_adapt() -> Adapt:
    """The shipped demo adapt block (config/demo.yaml), typed."""
    return load_settings(DEFAULT_CONFIG, REPO_ROOT / "config" / "demo.yaml").adapt


def _runner(model_cfg: dict, group: int, steps: int, dev: torch.device, tasks: list,
            acfg: Adapt | None = None):  # fmt: skip
    """A champion with ``group`` tasks' adapters, and one unit per group of tasks."""
    torch.manual_seed(0)
    model = build_model("champion", model_cfg).to(dev).eval()
    if acfg is None:
        acfg = _demo_adapt().replace(**LEVER, steps=steps)
    slot, layers = inject_lora(model, list(acfg.targets), acfg.rank, float(acfg.alpha),
                               adapter_slots(acfg, group))  # fmt: skip
    chunks = [tasks[i : i + group] for i in range(0, len(tasks), group)]
    return [lambda c=c: adapt_tasks(model, 2, slot, layers, c, acfg, MAX_NEW, 64) for c in chunks]


def bench_adaptation(cfg: Settings, test: PreparedSplit, s: Any, dev: torch.device) -> list[Row]:
    """Tasks/s at the demo's and at full Trial 69 size, one vs four tasks per batch."""
    demo_cfg = load_settings(DEFAULT_CONFIG, REPO_ROOT / "config" / "demo.yaml")
    demo = demo_cfg.models["champion"].config()
    shipped = _demo_adapt()
    shipped = shipped.replace(steps=shipped.steps if not s.quick else 4)
    former = _demo_adapt().replace(**{**FORMER, "steps": FORMER["steps"] if not s.quick else 2})
    sizes = {"demo size": demo, "full size": cfg.models["champion"].config()}
    if s.quick:
        sizes = {"quick size": cfg.models["champion"].config()}
    rows: list[Row] = []
    for size, model_cfg in sizes.items():
        n = s.adapt_tasks if size != "full size" else max(4, s.adapt_tasks // 2)
        ids = sorted(test.task_ids)[:n]
        tasks = [task_data(test, t) for t in ids]
        variants = [
            Timed("1 task per batch", _runner(model_cfg, 1, s.adapt_steps, dev, tasks), dev),
            Timed("4 tasks per batch", _runner(model_cfg, 4, s.adapt_steps, dev, tasks), dev),
            Timed("voting alone (0 steps)", _runner(model_cfg, 1, 0, dev, tasks), dev),
        ]
        if size != "full size":
            variants += [
                Timed("former default", _runner(model_cfg, 1, 0, dev, tasks, former), dev),
                Timed("shipped method", _runner(model_cfg, 1, 0, dev, tasks, shipped), dev),
            ]
        interleave(variants, s.reps, f"adaptation {size} {dev.type}")
        tps = {v.name: len(tasks) / v.seconds for v in variants}
        where = f"{dev.type}, {size}"
        note = f"{len(tasks)} tasks, {s.adapt_steps} steps, 4+4 views"
        rows += [
            (f"adapt {where}", f"tasks/s, {name}", f"{v:.3f}", note) for name, v in tps.items()
        ]
        rows += [
            (
                f"adapt {where}",
                "RATIO tasks/s 4 tasks per batch / 1",
                f"{tps['4 tasks per batch'] / tps['1 task per batch']:.2f}x",
                "the batched-adapters lever (> 1: faster)",
            ),
            *(
                [
                    (
                        f"adapt {where}",
                        "RATIO tasks/s shipped method / former default",
                        f"{tps['shipped method'] / tps['former default']:.2f}x",
                        "config/demo.yaml adapt block vs 12 fixed steps, 4+4 colour views",
                    )
                ]
                if "shipped method" in tps
                else []
            ),
            (
                f"adapt {where}",
                "share of a task's time spent answering (both votes)",
                f"{tps['1 task per batch'] / tps['voting alone (0 steps)']:.2f}",
                "0-step time / full time; the rest is fitting",
            ),
        ]
    return rows
