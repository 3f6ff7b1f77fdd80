"""Evaluate one checkpoint on the prepared ``test`` split with generated (greedy) answers.

An answer is correct only when the generated grid has the target's shape and every cell
(bug 6 of the original scored a teacher-forced argmax instead). Teacher-forced scores sit
beside it, named ``tf_*``. With ``eval.attempts: 2`` a second answer comes from another
augmentation view of the task, mapped back through its inverse, scored as ARC does (pass@2).

Outputs in ``out_dir`` (each written to a temp file, then renamed): ``per_task.csv`` (one row
per test query), ``summary.json`` and ``predictions.json`` (grids for the gallery).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from arctax.config import get
from arctax.data.augment import Augmentation, random_augmentation
from arctax.data.collate import collate
from arctax.data.dataset import load_split
from arctax.data.tokenize import IGNORE_INDEX
from arctax.evaluation.checkpoints import load_model
from arctax.evaluation.decode import greedy_decode
from arctax.evaluation.stats import task_table
from arctax.io import atomic_write_text

COLUMNS = [
    "model", "seed", "task_id", "category", "query", "gen_shape", "target_shape",
    "shape_correct", "grid_correct", "grid_correct_first", "cell_acc",
    "tf_cell_acc", "tf_grid_correct", "attempts",
]  # fmt: skip


def score(pred: np.ndarray | None, target: np.ndarray) -> tuple[bool, bool, float]:
    """``(shape_correct, grid_correct, cell_acc)``; cell accuracy is 0 when the shape is wrong."""
    if pred is None or pred.shape != target.shape:
        return False, False, 0.0
    same = pred == target
    return True, bool(same.all()), float(same.mean())


def _shape(g: np.ndarray | None) -> str:
    return "none" if g is None else f"{g.shape[0]}x{g.shape[1]}"


def _device(cfg: Mapping[str, Any]) -> torch.device:
    accel = cfg.get("trainer", {}).get("accelerator", "auto")
    return torch.device("cuda" if torch.cuda.is_available() and accel != "cpu" else "cpu")


def _view(example: dict[str, Any], aug: Augmentation) -> dict[str, Any]:
    """The same example seen through ``aug`` (query and every context pair alike)."""
    return {
        **example,
        "query_in": aug.apply(example["query_in"]),
        "query_out": aug.apply(example["query_out"]),
        "context": [(aug.apply(a), aug.apply(b)) for a, b in example["context"]],
    }


def _second_view(seed: int, task_id: str, pair: int) -> Augmentation:
    """A seeded non-identity augmentation per (task, query): same view on every run."""
    rng = np.random.default_rng([seed, zlib.crc32(task_id.encode()), pair])
    while True:
        aug = random_augmentation(rng)
        if not aug.is_identity:
            return aug


def _teacher_forced(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample teacher-forced token accuracy and all-tokens-right flag."""
    mask = labels != IGNORE_INDEX
    right = (logits.argmax(-1) == labels) & mask
    acc = right.sum(1).float() / mask.sum(1).clamp(min=1).float()
    return acc.cpu().numpy(), (right | ~mask).all(1).cpu().numpy()


def _to(batch: dict[str, torch.Tensor], dev: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(dev) for k, v in batch.items()}


def evaluate(
    cfg: Mapping[str, Any],
    ckpt_path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    label: str,
    seed: int | None = None,
    *,
    bootstrapped: bool | None = None,
) -> pd.DataFrame:
    """Score ``ckpt_path`` on ``data_dir``'s test split; write and return the per-query table.

    ``label`` names the model in every table; ``seed`` is the training seed (recorded only).
    ``bootstrapped`` overrides the checkpoint's own record of whether it was trained here.
    """
    out_dir = Path(out_dir)
    batch_size = int(get(cfg, "eval.batch_size"))
    attempts = int(get(cfg, "eval.attempts"))
    max_new = int(get(cfg, "eval.max_new_tokens"))
    eval_seed = int(get(cfg, "eval.seed"))
    n_gallery = int(get(cfg, "eval.gallery_tasks"))
    if attempts not in (1, 2):
        raise ValueError(f"config key 'eval.attempts' must be 1 or 2, got {attempts}")

    model, info = load_model(ckpt_path)
    dev = _device(cfg)
    model.to(dev)
    fmt, k = model.fmt, info["k"]
    ds = load_split(data_dir, "test")
    # originals only; a length-sorted order keeps padding (and decode steps) low per batch
    idx = np.flatnonzero(ds.ex_aug == 0)
    idx = idx[np.argsort(ds.lengths(info["model_name"])[idx], kind="stable")]

    rows: list[dict[str, Any]] = []
    preds: dict[int, list[np.ndarray | None]] = {}
    decode_s = 0.0
    for start in range(0, len(idx), batch_size):
        chunk = [int(i) for i in idx[start : start + batch_size]]
        examples = [ds[i] for i in chunk]
        batch = _to(collate(examples, fmt, k), dev)
        with torch.inference_mode():
            tf_acc, tf_ok = _teacher_forced(model(batch), batch["labels"])
        t0 = time.perf_counter()
        grids, _ = greedy_decode(model, batch, max_new)
        answers = [[g] for g in grids]
        if attempts == 2:
            metas = [ds.meta(i) for i in chunk]
            augs = [_second_view(eval_seed, m["task_id"], m["pair"]) for m in metas]
            views = [_view(e, a) for e, a in zip(examples, augs, strict=True)]
            grids2, _ = greedy_decode(model, _to(collate(views, fmt, k), dev), max_new)
            for ans, g, a in zip(answers, grids2, augs, strict=True):
                ans.append(None if g is None else a.invert(g))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        decode_s += time.perf_counter() - t0
        for j, i in enumerate(chunk):
            meta, target = ds.meta(i), examples[j]["query_out"]
            scores = [score(g, target) for g in answers[j]]
            best = max(range(len(scores)), key=lambda a: scores[a][1])  # any correct attempt wins
            shape_ok, grid_ok, cell = scores[best]
            preds[i] = answers[j]
            rows.append({
                "model": label, "seed": seed, "task_id": meta["task_id"],
                "category": meta["category"], "query": meta["pair"],
                "gen_shape": _shape(answers[j][best]), "target_shape": _shape(target),
                "shape_correct": shape_ok, "grid_correct": grid_ok,
                "grid_correct_first": scores[0][1], "cell_acc": cell,
                "tf_cell_acc": float(tf_acc[j]), "tf_grid_correct": bool(tf_ok[j]),
                "attempts": attempts,
            })  # fmt: skip

    table = pd.DataFrame(rows, columns=COLUMNS).sort_values(["task_id", "query"], kind="stable")
    table = table.reset_index(drop=True)
    atomic_write_text(out_dir / "per_task.csv", table.to_csv(index=False))
    is_boot = info["bootstrapped"] if bootstrapped is None else bool(bootstrapped)
    summary = _summary(table, label, seed, info, is_boot, decode_s, str(dev), attempts)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    gallery = _gallery(ds, idx, preds, n_gallery)
    atomic_write_text(out_dir / "predictions.json", json.dumps(gallery) + "\n")
    return table


def _summary(
    table: pd.DataFrame,
    label: str,
    seed: int | None,
    info: dict[str, Any],
    bootstrapped: bool,
    decode_s: float,
    device: str,
    attempts: int,
) -> dict[str, Any]:
    """Accuracies (task-level and query-level), counts, speed and the checkpoint's identity."""
    tasks = task_table(table.assign(seed=table["seed"].fillna(-1)))
    n_tasks, n_queries = len(tasks), len(table)
    return {
        "label": label,
        "model_name": info["model_name"],
        "seed": seed,
        "checkpoint": info["path"],
        "checkpoint_sha256": info["sha256"],
        "bootstrapped": bootstrapped,
        "attempts": attempts,
        "n_tasks": n_tasks,
        "n_queries": n_queries,
        "grid_acc": float(tasks["grid_correct"].mean()) if n_tasks else None,
        "shape_acc": float(tasks["shape_correct"].mean()) if n_tasks else None,
        "cell_acc": float(tasks["cell_acc"].mean()) if n_tasks else None,
        "query_grid_acc": float(table["grid_correct"].mean()) if n_queries else None,
        "first_attempt_grid_acc": float(table["grid_correct_first"].mean()) if n_queries else None,
        "tf_grid_acc": float(tasks["tf_grid_correct"].mean()) if n_tasks else None,
        "tf_cell_acc": float(tasks["tf_cell_acc"].mean()) if n_tasks else None,
        "teacher_forced_note": "tf_* are teacher-forced argmax scores, not generated answers",
        "decode_seconds": round(decode_s, 4),
        "decode_tasks_per_s": n_tasks / decode_s if decode_s > 0 else None,
        "decode_queries_per_s": n_queries / decode_s if decode_s > 0 else None,
        "device": device,
    }


def _gallery(ds, idx: np.ndarray, preds: dict[int, list], n_tasks: int) -> list[dict[str, Any]]:
    """Input, target and answers of every query of the first ``n_tasks`` tasks (by task id)."""
    chosen = sorted({ds.meta(int(i))["task_id"] for i in idx})[:n_tasks]
    items = []
    for i in sorted(
        (int(i) for i in idx), key=lambda i: (ds.meta(i)["task_id"], ds.meta(i)["pair"])
    ):
        meta = ds.meta(i)
        if meta["task_id"] not in chosen:
            continue
        ex = ds[i]
        items.append({
            "task_id": meta["task_id"], "query": meta["pair"], "category": meta["category"],
            "input": ex["query_in"].tolist(), "target": ex["query_out"].tolist(),
            "answers": [None if g is None else np.asarray(g).tolist() for g in preds[i]],
        })  # fmt: skip
    return items
