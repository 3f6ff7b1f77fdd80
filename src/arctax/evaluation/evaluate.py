"""Evaluate one checkpoint on the prepared ``test`` split with generated (greedy) answers.

An answer is correct only when the generated grid has the target's shape and every cell
(bug 6 of the original scored a teacher-forced argmax instead). Teacher-forced scores from one
pass sit beside it (:mod:`arctax.evaluation.measures`): ours, named ``tf_*`` (every answer
token, markers and first cell included), and the paper's as its code measured it, named
``paper_*`` (output cells only, the first one given). With ``eval.attempts: 2`` a second answer comes from another
augmentation view of the task, mapped back through its inverse, scored as ARC does (pass@2).
With ``eval.views: N`` (N > 1) the answers are voted over N views of each task instead
(:mod:`arctax.evaluation.voting`): attempt 1 (and 2) are the most voted.

Outputs in ``out_dir`` (each written to a temp file, then renamed): ``submission.json`` (the
answers, ARC Prize format), ``per_task.csv`` (one row per test query, scored from that
submission by :func:`arctax.evaluation.submission.score_submission`), ``summary.json`` and
``predictions.json`` (grids for the gallery).
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

from arctax.data.augment import Augmentation, random_augmentation
from arctax.data.collate import collate
from arctax.data.dataset import load_split
from arctax.data.tokenize import IGNORE_INDEX
from arctax.evaluation.checkpoints import load_model
from arctax.evaluation.decode import answer_inputs, greedy_decode, to_device
from arctax.evaluation.measures import decoder_inputs, ours, paper_counts, scored_labels
from arctax.evaluation.stats import task_table
from arctax.evaluation.submission import (
    SCORE_COLUMNS,
    parse_submission,
    score_submission,
    to_submission,
)
from arctax.evaluation.voting import task_views, voted_attempts
from arctax.io import atomic_write_text
from arctax.models import option_labels
from arctax.settings import Eval, Settings

# teacher-forced, per query: ours (token acc, markers included; every token right), then the
# paper's measurement (every scored cell right; right and scored cells, to pool over cells)
TF_COLUMNS = ("tf_token_acc", "tf_grid_correct", "paper_grid_correct", "paper_cells_right",
              "paper_cells")  # fmt: skip
COLUMNS = [*SCORE_COLUMNS[:-1], *TF_COLUMNS, "attempts"]


def _device(accel: str) -> torch.device:
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


def teacher_forced(
    logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor
) -> list[tuple[float, bool, bool, int, int]]:
    """Per sample, the :data:`TF_COLUMNS`: our token accuracy and all-tokens-right flag, then
    the paper's all-scored-cells-right flag, right and scored cells (one pass, two measures)."""
    pred = logits.argmax(-1)
    o, p = ours(pred, labels, IGNORE_INDEX), paper_counts(pred, labels, inputs)
    acc = (o["right"].float() / o["tokens"].clamp(min=1).float()).tolist()
    cols = (o["grid"], p["grid"], p["right"], p["cells"])
    grid, pgrid, pright, pcells = (c.tolist() for c in cols)
    return list(zip(acc, grid, pgrid, pright, pcells, strict=True))


def _to(batch: dict[str, torch.Tensor], dev: torch.device) -> dict[str, torch.Tensor]:
    return to_device(batch, dev)


def query_order(ds: Any) -> np.ndarray:
    """Example indices of the original test queries, sorted by input length (so a batch pads
    little). The order uses no answer, and every evaluation (a model, a reference adapter)
    batches the same queries together, so their answers are computed alike."""
    idx = np.flatnonzero(ds.ex_aug == 0)
    src_len, _ = ds.token_lengths()
    return idx[np.argsort(src_len[idx], kind="stable")]


def vote_answers(
    model: torch.nn.Module,
    k: int,
    examples: list[dict[str, Any]],
    task_ids: list[str],
    views: int,
    attempts: int,
    seed: int,
    max_new: int,
) -> list[list[np.ndarray | None]]:
    """Answer each example under ``views`` augmented views of its task, map every answer back
    and vote: the top ``attempts`` answers (:mod:`arctax.evaluation.voting`)."""
    per_task = {t: task_views(views, seed, t) for t in set(task_ids)}
    ballots: list[list[np.ndarray | None]] = [[] for _ in examples]
    for v in range(views):
        augs = [per_task[t][v] for t in task_ids]
        items = [
            (a.apply(e["query_in"]), [(a.apply(x), a.apply(y)) for x, y in e["context"]])
            for e, a in zip(examples, augs, strict=True)
        ]
        with torch.inference_mode():
            grids = answer_inputs(model, k, items, max_new)
        for ballot, g, a in zip(ballots, grids, augs, strict=True):
            ballot.append(None if g is None else a.invert(g))
    return [voted_attempts(b, attempts) for b in ballots]


def evaluate(
    s: Settings,
    ckpt_path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    label: str,
    seed: int | None = None,
    *,
    bootstrapped: bool = False,
    source: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Score ``ckpt_path`` on ``data_dir``'s test split under the settings ``s`` (its eval
    block; its models and limits say which checkpoint may load); write and return the
    per-query table.

    ``label`` names the model in every table; ``seed`` is the training seed (recorded only).
    ``bootstrapped``: these are the weights of a stand-in reference trained here
    (``champion.bootstrap``); ``source`` describes where a reference came from (both recorded in
    ``summary.json``, beside ``trained_here``: any weights this workflow trained).
    """
    ev = s.eval
    batch_size, attempts, max_new = ev.batch_size, ev.attempts, ev.max_new_tokens
    eval_seed, n_views = ev.seed, ev.views
    if attempts not in (1, 2):
        raise ValueError(f"config key 'eval.attempts' must be 1 or 2, got {attempts}")

    model, info = load_model(ckpt_path, s.models, s.limits)
    dev = _device(s.trainer.accelerator)
    model.to(dev)
    fmt, k = model.fmt, info["k"]
    ds = load_split(data_dir, "test")
    idx = query_order(ds)

    answers: dict[int, list[np.ndarray | None]] = {}
    tf: dict[int, tuple[float, bool, bool, int, int]] = {}
    decode_s = 0.0
    for start in range(0, len(idx), batch_size):
        chunk = [int(i) for i in idx[start : start + batch_size]]
        examples = [ds[i] for i in chunk]
        batch = _to(collate(examples, fmt, k), dev)
        with torch.inference_mode():
            labels = scored_labels(model, batch)  # the decoder-only's loss_over: its own
            tf_rows = teacher_forced(model(batch), labels, decoder_inputs(batch))
        t0 = time.perf_counter()
        if n_views > 1:
            found = vote_answers(model, k, examples, [ds.meta(i)["task_id"] for i in chunk],
                                 n_views, attempts, eval_seed, max_new)  # fmt: skip
        else:
            grids, _ = greedy_decode(model, batch, max_new)
            found = [[g] for g in grids]
        if attempts == 2 and n_views == 1:
            metas = [ds.meta(i) for i in chunk]
            augs = [_second_view(eval_seed, m["task_id"], m["pair"]) for m in metas]
            views = [_view(e, a) for e, a in zip(examples, augs, strict=True)]
            grids2, _ = greedy_decode(model, _to(collate(views, fmt, k), dev), max_new)
            for ans, g, a in zip(found, grids2, augs, strict=True):
                ans.append(None if g is None else a.invert(g))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        decode_s += time.perf_counter() - t0
        for j, i in enumerate(chunk):
            answers[i] = found[j]
            tf[i] = tf_rows[j]

    identity = {
        "model_name": info["model_name"],
        "checkpoint": info["path"],
        "checkpoint_sha256": info["sha256"],
        "trained_here": info["trained_here"],
        "bootstrapped": bool(bootstrapped),
        "source": dict(source or {"way": "checkpoint", "path": info["path"]}),
        "model_class": info.get("model_class"),
        "model_code": info.get("model_code"),  # the config's class; a changed file accepted?
        "parameters": sum(p.numel() for p in model.parameters()),
        "model_options": option_labels(info["model_cfg"]),  # the rung options it ran with
    }
    return write_evaluation(
        ev, ds, answers, out_dir, label, seed,
        identity=identity, tf=tf, decode_s=decode_s, device=str(dev),
    )  # fmt: skip


def write_evaluation(
    ev: Eval,
    ds: Any,
    answers: Mapping[int, list[np.ndarray | None]],
    out_dir: str | Path,
    label: str,
    seed: int | None,
    *,
    identity: Mapping[str, Any],
    tf: Mapping[int, tuple[float, bool, bool, int, int]] | None = None,
    decode_s: float | None = None,
    device: str | None = None,
    attempts: int | None = None,
    tasks: set[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Write ``submission.json`` from ``answers`` (example index -> attempts), score THAT file's
    content with :func:`score_submission`, and write ``per_task.csv``, ``summary.json`` and
    ``predictions.json``. Every evaluation, of a model or of a reference, ends here.

    ``tf`` holds the teacher-forced :data:`TF_COLUMNS` per example where a model was run
    (:func:`teacher_forced`); without it those columns are empty (NaN). ``attempts`` overrides ``eval.attempts``
    (voting rows are pass@2), ``tasks`` scores a subset of the test tasks, ``extra`` adds keys
    to ``summary.json``.
    """
    out_dir = Path(out_dir)
    attempts = int(attempts or ev.attempts)
    by_task: dict[str, dict[int, list[np.ndarray | None]]] = {}
    for i, found in answers.items():
        m = ds.meta(int(i))
        by_task.setdefault(m["task_id"], {})[m["pair"]] = found
    sub = to_submission(by_task)
    atomic_write_text(out_dir / "submission.json", json.dumps(sub) + "\n")
    origin = str(out_dir / "submission.json")
    parsed = parse_submission(sub, origin)
    table = score_submission(parsed, ds, attempts, label, seed, origin, tasks)
    tf = tf or {}
    key = {(ds.meta(int(i))["task_id"], ds.meta(int(i))["pair"]): int(i) for i in answers}
    rows = [key[(t, q)] for t, q in zip(table["task_id"], table["query"], strict=True)]
    for j, col in enumerate(TF_COLUMNS):
        table[col] = [tf[i][j] if i in tf else np.nan for i in rows]
    table = table[COLUMNS]
    atomic_write_text(out_dir / "per_task.csv", table.to_csv(index=False))
    summary = _summary(table, label, seed, identity, decode_s, device, attempts)
    summary["test_left_out"] = _left_out(ds)
    summary["test_set"] = _test_set(ds)
    summary.update(extra or {})
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    n_gallery = ev.gallery_tasks
    order = query_order(ds)
    if tasks is not None:
        order = np.array([i for i in order if ds.meta(int(i))["task_id"] in tasks], dtype=np.int64)
    gallery = _gallery(ds, order, answers, n_gallery)
    atomic_write_text(out_dir / "predictions.json", json.dumps(gallery) + "\n")
    return table


def _manifest(ds: Any) -> dict[str, Any]:
    """The ``manifest.json`` beside the test split (empty when there is none)."""
    path = getattr(ds, "path", None)
    manifest = Path(path).parent / "manifest.json" if path is not None else None
    if manifest is None or not manifest.exists():
        return {}
    from arctax.data.dataset import load_manifest

    return load_manifest(manifest.parent)


def _test_set(ds: Any) -> dict[str, Any]:
    """Which test set the split is: its name (``data.test_sets``), source and version."""
    m = _manifest(ds)
    if m.get("kind") == "test":  # a test set's own folder (the workflow)
        return {"name": m.get("test_set"), "source": m.get("source"), "version": m.get("version")}
    return {"name": m.get("test_set"), "source": m.get("test_source"),
            "version": m.get("test_version")}  # fmt: skip


def _left_out(ds: Any) -> dict[str, Any]:
    """How many tasks of the test source the prepared test split left out whole, and why
    (``manifest.json``: ``test_left_out``; a task is scored on all its test inputs or not at all).
    """
    m = _manifest(ds)
    if not m:
        return {"n_tasks": None, "reasons": {}}
    left = m.get("test_left_out") or {}
    reasons: dict[str, int] = {}
    for why in left.values():
        reasons[why] = reasons.get(why, 0) + 1
    return {"n_tasks": len(left), "reasons": reasons}


def _summary(
    table: pd.DataFrame,
    label: str,
    seed: int | None,
    identity: Mapping[str, Any],
    decode_s: float | None,
    device: str | None,
    attempts: int,
) -> dict[str, Any]:
    """Accuracies (task-level and query-level), counts, speed and where the answers came from."""
    tasks = task_table(table.assign(seed=table["seed"].fillna(-1)))
    n_tasks, n_queries = len(tasks), len(table)

    def mean(frame: pd.DataFrame, col: str) -> float | None:
        v = frame[col].astype(float)
        return float(v.mean()) if len(v) and v.notna().any() else None

    return {
        "label": label,
        "model_name": identity.get("model_name"),
        "seed": seed,
        "checkpoint": identity.get("checkpoint"),
        "checkpoint_sha256": identity.get("checkpoint_sha256"),
        # trained_here: weights trained by this workflow (every model, a bootstrapped
        # reference); bootstrapped: only the reference's stand-in (champion.bootstrap)
        "trained_here": bool(identity.get("trained_here", False)),
        "bootstrapped": bool(identity.get("bootstrapped", False)),
        "model_class": identity.get("model_class"),  # None: a built-in model
        # the config's class for the checkpoint; accepted_change: models.<name>.accept_changed_code
        "model_code": identity.get("model_code"),
        "parameters": identity.get("parameters"),  # None: answers without a model (predictions)
        "model_options": list(identity.get("model_options") or []),
        "source": dict(identity.get("source") or {}),
        "attempts": attempts,
        "n_tasks": n_tasks,
        "n_queries": n_queries,
        "grid_acc": mean(tasks, "grid_correct"),
        "shape_acc": mean(tasks, "shape_correct"),
        "cell_acc": mean(tasks, "cell_acc"),
        "query_grid_acc": mean(table, "grid_correct"),
        "first_attempt_grid_acc": mean(table, "grid_correct_first"),
        "tf_grid_acc": mean(tasks, "tf_grid_correct"),
        "tf_token_acc": mean(tasks, "tf_token_acc"),
        # per example (a mean over queries): the paper's unit
        "query_cell_acc": mean(table, "cell_acc"),
        "query_tf_grid_acc": mean(table, "tf_grid_correct"),
        "query_tf_token_acc": mean(table, "tf_token_acc"),
        # as the paper's code measured it: grids per example, cells pooled over cells
        "query_paper_grid_acc": mean(table, "paper_grid_correct"),
        "paper_cell_acc": _pooled(table),
        "teacher_forced_note": (
            "tf_* and paper_* are teacher-forced argmax scores, not generated answers; tf_*: "
            "ours (markers and first cell scored; token acc includes the markers); paper_*: as "
            "the paper's code measured it (output cells only, first cell given, cells pooled)"
        ),
        "decode_seconds": None if decode_s is None else round(decode_s, 4),
        "decode_tasks_per_s": n_tasks / decode_s if decode_s else None,
        "decode_queries_per_s": n_queries / decode_s if decode_s else None,
        "device": device,
    }


def _pooled(table: pd.DataFrame) -> float | None:
    """Right cells over scored cells, every query together (the paper's cell accuracy)."""
    cells = table["paper_cells"].astype(float)
    if not cells.notna().any() or cells.sum() == 0:
        return None
    return float(table["paper_cells_right"].astype(float).sum() / cells.sum())


def _gallery(ds, idx: np.ndarray, preds: Mapping[int, list], n_tasks: int) -> list[dict[str, Any]]:
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
