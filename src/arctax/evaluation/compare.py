"""Compare every evaluated model against the champion reference, over ARC tasks.

Inputs are the folders written by :func:`arctax.evaluation.evaluate.evaluate` (one per model
and seed) and the training run folders (``metrics.csv``, ``provenance.json``). Outputs in
``out_dir``: ``summary.csv``, ``per_category.csv``, ``audit.csv``, ``paired.csv``,
``summary.md``, ``summary.json`` (every table, per-example scores, the paired differences and
the paper's rows, machine-readable) and the figures ``curves.png``, ``accuracy.png``,
``categories.png``, ``gallery.png``.

Statistics are over tasks. Every interval is a two-level bootstrap: tasks, then, with several
seeds, the seeds within each drawn task (:mod:`arctax.evaluation.stats`), so seed variance is in
it; McNemar needs one yes/no per task, so a task counts as solved when at least half of the
seeds solve it. Per-example scores (the paper's unit) resample the same way, and every adjacent
ladder step and each model against the reference is compared example by example, with Holm's
correction across the table (``paired.csv``). Every bootstrap uses ``eval.seed``: the same
inputs give the same numbers. On a test set the paper reported (its val split, ARC-AGI-2) its
figures stand beside the like-for-like measurement (:mod:`arctax.evaluation.paper`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arctax.evaluation import plots
from arctax.evaluation.markdown import md_table
from arctax.evaluation.paper import load_paper, paper_markdown, paper_rows, paper_set, size_notes
from arctax.evaluation.stats import example_row, holm, model_row, paired_examples, task_table
from arctax.io import atomic_write_text, open_regular, read_json
from arctax.settings import Eval

PathLike = str | Path


def _dirs(value: PathLike | Sequence[PathLike]) -> list[Path]:
    return [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]


def load_evals(eval_dirs: Mapping[str, PathLike | Sequence[PathLike]]) -> tuple[pd.DataFrame, dict]:
    """Concatenate the per-query tables (model column = label) and collect each summary.json."""
    frames, summaries = [], {}
    for label, value in eval_dirs.items():
        for i, d in enumerate(_dirs(value)):
            csv = d / "per_task.csv"
            if not csv.is_file():
                raise FileNotFoundError(
                    f"{csv}: missing; run the evaluate step for '{label}' first"
                )
            df = _csv(csv)
            df["model"] = label
            # a run without a recorded seed still needs a distinct one to be averaged correctly
            df["seed"] = df["seed"].fillna(-(i + 1)).astype(int)
            frames.append(df)
            sj = d / "summary.json"
            summaries.setdefault(label, []).append(_record(sj) if sj.exists() else {})
    if not frames:
        raise ValueError("compare: no evaluation folders given")
    return pd.concat(frames, ignore_index=True), summaries


MAX_CSV_BYTES = 256 * 2**20  # a per_task.csv is ~100 bytes a query: KBs


def _csv(path: Path) -> pd.DataFrame:
    """A ``per_task.csv``: a regular file of at most :data:`MAX_CSV_BYTES`."""
    with open_regular(path, "per_task.csv") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_CSV_BYTES:
            raise ValueError(
                f"{path}: {size} bytes, over {MAX_CSV_BYTES}; re-run its evaluate step"
            )
        return pd.read_csv(f, dtype={"task_id": str})


def _record(path: Path) -> dict[str, Any]:
    """A ``summary.json`` / ``provenance.json`` (bounded: :func:`arctax.io.read_json`), which
    must be a JSON object."""
    rec = read_json(path, path.name)
    if not isinstance(rec, dict):
        raise ValueError(f"{path}: a {type(rec).__name__}, not a JSON object; re-run its step")
    return rec


MATCH = {True: "match", False: "DEVIATION", None: "n/a"}  # n/a: recorded, not compared


def audit_table(train_dirs: Sequence[PathLike]) -> pd.DataFrame:
    """One row per (run, audited key) from each run's ``provenance.json``: the Trial 69 recipe,
    then the training data against Trial 69's and the model against the paper's sizes."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for d in map(Path, train_dirs):
        prov = d / "provenance.json"
        try:
            rec = _record(prov)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{prov}: missing or unreadable ({e}); re-run training") from e
        run = f"{rec['model']}_s{rec['seed']}" if "model" in rec and "seed" in rec else d.name
        if run in seen:  # e.g. a bootstrapped reference and a compared champion, same seed
            run = f"{run} ({d})"
        seen.add(run)
        for r in rec.get("audit", []):
            rows.append({
                "run": run, "key": r["key"], "expected": json.dumps(r["expected"]),
                "actual": json.dumps(r["actual"]),
                "match": MATCH[r["match"]], "reason": r.get("reason", ""),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "key", "expected", "actual", "match", "reason"])


def _curves(train_dirs: Sequence[PathLike]) -> dict[str, pd.DataFrame]:
    runs = {}
    for d in map(Path, train_dirs):
        m = d / "metrics.csv"
        if not m.is_file():
            continue
        name = d.name
        prov = d / "provenance.json"
        if prov.exists():
            rec = _record(prov)
            name = f"{rec.get('model', d.name)}_s{rec.get('seed', '?')}"
        runs[name if name not in runs else f"{name} ({d})"] = plots.read_metrics(m)
    return runs


def _gallery(eval_dirs: Mapping[str, Any], ref: str, n: int) -> tuple[list, dict]:
    """The reference's gallery items and every model's first answer to the same queries."""

    def load(label: str) -> list[dict]:
        p = _dirs(eval_dirs[label])[0] / "predictions.json"
        items = read_json(p, "predictions.json") if p.exists() else []
        if not isinstance(items, list) or not all(isinstance(it, dict) for it in items):
            raise ValueError(f"{p}: not a list of predictions; re-run the evaluate step")
        return items

    ref_items = load(ref)
    keep = set(sorted({it["task_id"] for it in ref_items})[:n])
    items = [it for it in ref_items if it["task_id"] in keep]
    answers = {}
    for label in eval_dirs:
        got = {(it["task_id"], it["query"]): it["answers"][0] for it in load(label)}
        answers[label] = [got.get((it["task_id"], it["query"])) for it in items]
    return items, answers


def compare(
    ev: Eval,
    eval_dirs: Mapping[str, PathLike | Sequence[PathLike]],
    train_dirs: Sequence[PathLike],
    out_dir: PathLike,
    reference_label: str = "champion",
    adaptation: bool = False,
    test_source: str | None = None,
) -> dict[str, Any]:
    """Tables, figures and ``summary.md`` comparing all models with ``reference_label``.

    ``eval_dirs`` maps a label to one evaluation folder or a list of them (one per seed).
    ``adaptation``: the run also adapts (``summary.md`` then points at ``adaptation.md``).
    ``test_source``: the compared test set's source (``data.test_sets``); on the paper's sets
    (``val``, ARC-AGI-2) the report puts the paper's figures beside ours.
    Returns ``{"reference", "bootstrapped_reference", "summary", "per_example", "paired", "paper",
    "files"}``.
    """
    out_dir = Path(out_dir)
    if reference_label not in eval_dirs:
        raise ValueError(
            f"reference '{reference_label}' is not among the evaluated labels "
            f"({', '.join(eval_dirs)}); evaluate the champion reference first"
        )
    boot = (ev.bootstrap_samples, float(ev.ci), ev.seed)
    per_query, summaries = load_evals(eval_dirs)
    tasks = task_table(per_query)
    ids = pd.Index(sorted(tasks["task_id"].unique()))
    for label in eval_dirs:
        have = set(tasks.loc[tasks["model"] == label, "task_id"])
        if have != set(ids):
            raise ValueError(
                f"'{label}' was evaluated on {len(have)} tasks but the others on {len(ids)}; "
                "evaluate every model on the same prepared test split"
            )
    models = [reference_label, *[m for m in eval_dirs if m != reference_label]]
    summary = pd.DataFrame([model_row(tasks, m, reference_label, ids, boot) for m in models])
    speeds = [[s["decode_tasks_per_s"] for s in summaries[m] if s.get("decode_tasks_per_s")]
              for m in models]  # fmt: skip
    summary["decode_tasks_per_s"] = [float(np.mean(v)) if v else np.nan for v in speeds]
    for key in ("bootstrapped", "trained_here"):
        summary[key] = [any(s.get(key, False) for s in summaries[m]) for m in models]
    summary["answers_from"] = [
        (summaries[m][0].get("source") or {}).get("way", "checkpoint") for m in models
    ]
    summary["attempts"] = [
        int(per_query.loc[per_query["model"] == m, "attempts"].max()) for m in models
    ]
    summary["parameters"] = [summaries[m][0].get("parameters") for m in models]
    summary["size_vs_champion"] = size_ratios(summary, reference_label)

    cat_rows = []
    for cat in sorted(tasks["category"].astype(str).unique()):
        cids = pd.Index(sorted(tasks.loc[tasks["category"].astype(str) == cat, "task_id"].unique()))
        for m in models:
            r = model_row(tasks, m, reference_label, cids, boot)
            cat_rows.append({"category": cat, **{k: r[k] for k in _CAT_COLS}})
    per_category = pd.DataFrame(cat_rows)
    audit = audit_table(train_dirs)
    examples = pd.DataFrame([example_row(per_query, m, boot) for m in models])
    paired = paired_table(per_query, comparisons(models, reference_label), boot)
    ref_boot = bool(summary.loc[0, "bootstrapped"])
    options = {m: summaries[m][0].get("model_options") or [] for m in models}
    paper = paper_comparison(test_source, examples, audit, reference_label, ref_boot, boot[1],
                             options)  # fmt: skip

    files = {
        "summary.csv": summary.to_csv(index=False),
        "per_category.csv": per_category.to_csv(index=False),
        "audit.csv": audit.to_csv(index=False),
        "paired.csv": paired.to_csv(index=False),
    }
    for name, text in files.items():
        atomic_write_text(out_dir / name, text)
    plots.plot_curves(_curves(train_dirs), out_dir / "curves.png")
    plots.plot_accuracy(summary, out_dir / "accuracy.png", boot[1])
    plots.plot_category_heatmap(per_category, out_dir / "categories.png")
    items, answers = _gallery(eval_dirs, reference_label, ev.gallery_tasks)
    plots.plot_gallery(items, answers, out_dir / "gallery.png")
    note = reference_note(reference_label, summaries[reference_label][0], ref_boot)
    note += test_set_note(summaries[reference_label][0], len(ids))
    extra = [*example_markdown(examples, boot[1]), "", *paired_markdown(paired, boot[1]), "",
             *paper.pop("markdown", [])]  # fmt: skip
    extra = [*options_markdown(summaries, models), *extra]
    md = summary_markdown(
        summary, per_category, audit, reference_label, note, boot[1], adaptation, extra
    )
    atomic_write_text(out_dir / "summary.md", md)
    result = {
        "reference": reference_label,
        "bootstrapped_reference": ref_boot,
        "test_set": summaries[reference_label][0].get("test_set"),
        "summary": summary.to_dict(orient="records"),
        "per_example": examples.to_dict(orient="records"),
        "paired": paired.to_dict(orient="records"),
        "paper": paper,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(_plain(result), indent=2) + "\n")
    return {
        **result,
        "files": [
            *files,
            "summary.md",
            "summary.json",
            "curves.png",
            "accuracy.png",
            "categories.png",
            "gallery.png",
        ],
    }


def _plain(obj: Any) -> Any:
    """``obj`` with NaN as ``None`` and numpy scalars as Python ones (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    return None if isinstance(obj, float) and math.isnan(obj) else obj


def paper_comparison(
    test_source: str | None,
    examples: pd.DataFrame,
    audit: pd.DataFrame,
    reference: str,
    bootstrapped: bool,
    ci: float,
    options: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The paper's figures beside ours on a test set it reported (``{}`` on any other):
    ``{"set", "rows", "notes", "markdown"}``. The reference stands beside the champion;
    ``options``: each model's rung options (labelled beside it)."""
    which = paper_set(test_source)
    block = load_paper().get(which) if which else None
    if not block:
        return {}
    labels = {"champion": list(dict.fromkeys(["champion", reference]))}
    rows = paper_rows(block, examples, labels, options)
    first = examples.iloc[0]
    notes = size_notes(block, int(first["n_tasks"]), int(first["n_examples"]))
    if bootstrapped:
        notes.append(f"The reference `{reference}` is a stand-in trained here, not the paper's "
                     "weights.")  # fmt: skip
    md = paper_markdown(block, rows, audit, notes, ci)
    return {"set": which, "rows": rows.to_dict(orient="records"), "notes": notes, "markdown": md}


# the two teacher-forced measurements from one pass (arctax.evaluation.measures), by name
PAPER_LABEL = "as the paper's code measured it"
OURS_LABEL = "ours (shape, markers and first cell scored: stricter)"


def _est(r: Mapping[str, Any], name: str) -> str:
    return pct(r[name], r[f"{name}_lo"], r[f"{name}_hi"])


def _spread(r: Mapping[str, Any], name: str) -> str:
    return f"{pct(r[f'{name}_seed_mean'])} ± {pct(r[f'{name}_seed_std'])}"


def example_markdown(examples: pd.DataFrame, ci: float) -> list[str]:
    """The per-example section: the two teacher-forced measurements side by side (the paper's
    as its code made it, and ours), then the generated answers; each a mean over every query
    with a two-level CI (tasks, then seeds), and the spread over seeds."""
    c = f"{ci:.0%} CI"
    recs = examples.to_dict(orient="records")
    tf_rows = [
        [r["model"], r["n_seeds"], r["n_tasks"], r["n_examples"], _est(r, "ex_paper_grid_acc"),
         _spread(r, "ex_paper_grid_acc"), _est(r, "ex_paper_cell_acc"), _est(r, "ex_tf_grid_acc"),
         _spread(r, "ex_tf_grid_acc"), _est(r, "ex_tf_token_acc")]
        for r in recs
    ]  # fmt: skip
    tf_header = ["model", "seeds", "tasks", "examples", f"grid acc, {PAPER_LABEL} [{c}]",
                 "seed mean ± std", f"cell acc, {PAPER_LABEL} (pooled over cells) [{c}]",
                 f"grid acc, {OURS_LABEL} [{c}]", "seed mean ± std",
                 f"token acc, ours (markers included: not cells) [{c}]"]  # fmt: skip
    gen_rows = [
        [r["model"], _est(r, "ex_grid_acc"), _spread(r, "ex_grid_acc"), _est(r, "ex_cell_acc")]
        for r in recs
    ]
    gen_header = ["model", f"generated grid acc, per example [{c}]", "seed mean ± std",
                  f"generated cell acc, per example [{c}]"]  # fmt: skip
    return [
        "## Per example (the paper's unit)",
        "",
        f"Each query counts once (a mean over examples, not tasks). Intervals: {c}, percentile "
        "bootstrap over **tasks** (a task's examples share its rule: not independent) and, with "
        "two seeds or more, over the seeds within each drawn task, so seed-to-seed variance is "
        "in the interval; mean ± std is over the seeds' own scores (`summary.json` has each "
        "seed's CI).",
        "",
        "**Teacher-forced** (the argmax of each token given the true prefix: not generated "
        f"answers), two measurements from the same pass. *{PAPER_LABEL.capitalize()}*: output "
        "cells only (no row or end markers), the first cell given and not scored, padding "
        "ignored, a grid right when every scored cell is right, cells pooled over the test set: "
        "it never asks for the grid's shape. *Ours*: every answer token, the markers and the "
        "first cell included, so the shape too: stricter, and its token accuracy is not cell "
        "accuracy. A decoder-only model with `loss_over: sequence` is scored over its whole "
        "`[input] SEP [output]` sequence (the paper's other decoder-only measurement).",
        "",
        md_table(tf_header, tf_rows),
        "",
        "**Generated** (greedy answers: what the model produces):",
        "",
        md_table(gen_header, gen_rows),
        *_per_seed_markdown(examples, c),
    ]


def _per_seed_markdown(examples: pd.DataFrame, c: str) -> list[str]:
    """Each seed's own per-example scores with their task-resampled CIs (several seeds only)."""
    rows = [
        [r["model"], s["seed"], _est(s, "ex_paper_grid_acc"), _est(s, "ex_tf_grid_acc"),
         _est(s, "ex_grid_acc")]
        for r in examples.to_dict(orient="records") if r["n_seeds"] > 1 for s in r["per_seed"]
    ]  # fmt: skip
    if not rows:
        return []
    header = ["model", "seed", f"teacher-forced grid acc, {PAPER_LABEL} [{c}]",
              f"teacher-forced grid acc, ours [{c}]",
              f"generated grid acc, per example [{c}]"]  # fmt: skip
    return ["", "Each seed on its own:", "", md_table(header, rows)]


# the ladder's rungs, bottom to top (config/ladder.yaml, config/ladder_as_run.yaml)
LADDER = ("decoder_only", "encoder_decoder", "grid2d", "perminv", "champion")
# per-example metrics compared pair by pair: column -> label
PAIRED_METRICS = {
    "paper_grid_correct": f"teacher-forced grid acc, {PAPER_LABEL}",
    "tf_grid_correct": "teacher-forced grid acc, ours",
    "grid_correct": "generated grid acc",
}


def comparisons(models: Sequence[str], reference: str) -> list[tuple[str, str, str]]:
    """``(a, b, why)`` pairs to compare as ``a - b``: every adjacent step of the ladder among
    ``models`` (the upper rung minus the lower), then each other model against the reference."""
    rungs = [m for m in LADDER if m in models]
    pairs = []
    for lo, hi in itertools.pairwise(rungs):
        skipped = LADDER[LADDER.index(lo) + 1 : LADDER.index(hi)]
        why = f"ladder, skipping {', '.join(skipped)}" if skipped else "ladder step"
        pairs.append((hi, lo, why))
    seen = {frozenset(p[:2]) for p in pairs}
    for m in models:
        if m != reference and frozenset((m, reference)) not in seen:
            pairs.append((m, reference, "vs reference"))
    return pairs


def paired_table(
    per_query: pd.DataFrame, pairs: Sequence[tuple[str, str, str]], boot: tuple[int, float, int]
) -> pd.DataFrame:
    """Every pair x :data:`PAIRED_METRICS`: the per-example difference with its two-level CI,
    standard error, smallest detectable difference, p-value and Holm's adjusted p-value over
    every comparison of the table (the study's family)."""
    rows = []
    for a, b, why in pairs:
        for col, label in PAIRED_METRICS.items():
            d = paired_examples(per_query, a, b, col, boot)
            rows.append({"a": a, "b": b, "kind": why, "metric": label, "diff": d.diff,
                         "lo": d.lo, "hi": d.hi, "se": d.se, "mdd": d.mdd, "p": d.p,
                         "n_tasks": d.n})  # fmt: skip
    out = pd.DataFrame(rows, columns=["a", "b", "kind", "metric", "diff", "lo", "hi", "se", "mdd",
                                      "p", "n_tasks"])  # fmt: skip
    out["p_holm"] = holm(out["p"].to_numpy()) if len(out) else []
    return out


def paired_markdown(paired: pd.DataFrame, ci: float) -> list[str]:
    """The paired section: each comparison, its CI, what the test set can detect, p and Holm."""
    if paired.empty:
        return []
    c = f"{ci:.0%} CI"
    m = int(paired["p"].notna().sum())
    rows = [
        [f"{r.a} − {r.b} ({r.kind})", r.metric, pct(r.diff, r.lo, r.hi, signed=True),
         _points(r.mdd), _p(r.p), _p(r.p_holm),
         "n/a" if math.isnan(r.p_holm) else ("yes" if r.p_holm < 1 - ci else "no")]
        for r in paired.itertuples()
    ]  # fmt: skip
    return [
        "## Paired differences, example by example",
        "",
        "Every adjacent step of the ladder (the upper rung minus the lower) and each model "
        f"against the reference, on the same test examples. Intervals: {c}, two-level bootstrap "
        "(the same tasks drawn for both models, then each model's seeds within each task). "
        "p: two-sided, from the recentred replicates. **Holm's correction across the "
        f"{m} comparisons of this table** (the study's family); a difference counts only when "
        f"its Holm p is below {1 - ci:.2g}. *Detectable*: the smallest true difference this "
        f"test set finds with 80% power at that level (±(z + z_0.8) x the replicates' standard "
        "error): a smaller one may be real and unseen.",
        "",
        md_table(
            [
                "comparison",
                "metric",
                f"difference [{c}]",
                "detectable (80% power)",
                "p",
                f"Holm p ({m})",
                "after Holm",
            ],
            rows,
        ),
    ]


def _points(v: float) -> str:
    """The smallest detectable difference; none where the sample has no spread at all (every
    replicate the same: the bootstrap cannot say what a difference would look like)."""
    if v is None or math.isnan(v):
        return "n/a"
    return f"±{100 * v:.2f} pts" if v > 0 else "n/a (no spread)"


def _p(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.3g}"


def options_markdown(summaries: Mapping[str, list[dict]], models: Sequence[str]) -> list[str]:
    """Each model's rung options (``model_options`` of its evaluation): the labels wherever a
    rung appears; nothing when no model has one."""
    rows = [[m, "; ".join(summaries[m][0].get("model_options") or [])] for m in models]
    rows = [r for r in rows if r[1]]
    if not rows:
        return []
    return ["## Model options (what each rung changes from the defaults)", "",
            md_table(["model", "options"], rows), ""]  # fmt: skip


ADAPTATION_POINTER = (
    "Voting over augmented views and per-task adaptation (test-time training): "
    "**`adaptation.md`** (base / `+vote` / `+adapt` per model, pass@1 and pass@2 on the same "
    "adapted tasks, paired tests against voting alone; it says first when adaptation loses "
    "more tasks than it gains).\n"
)


SIZE_TOLERANCE = 0.05  # the paper matched its models to ~1.7M parameters; beyond ±5%: flagged


def size_ratios(summary: pd.DataFrame, reference: str) -> list[float]:
    """Each model's parameter count relative to the champion's, minus 1 (NaN when unknown).

    The champion is the trained ``champion`` when the study has one, else the reference."""
    counts = dict(zip(summary["model"], summary["parameters"], strict=True))
    base = counts.get("champion") or counts.get(reference)
    return [
        float(c) / float(base) - 1.0 if _known(c) and _known(base) else math.nan
        for c in summary["parameters"]
    ]


def _known(n: Any) -> bool:
    return n is not None and not (isinstance(n, float) and math.isnan(n)) and n > 0


def size_flags(summary: pd.DataFrame) -> list[str]:
    """One line per model whose size is more than ±5% off the champion's."""
    return [
        f"**{r.model} is not size-matched**: {int(r.parameters):,} parameters, "
        f"{r.size_vs_champion:+.1%} of the champion's (more than ±{SIZE_TOLERANCE:.0%}); "
        "part of any difference may be capacity, not architecture."
        for r in summary.itertuples()
        if not math.isnan(r.size_vs_champion) and abs(r.size_vs_champion) > SIZE_TOLERANCE
    ]


_CAT_COLS = ("model", "n_tasks", "grid_acc", "grid_acc_lo", "grid_acc_hi", "diff_vs_ref",
             "diff_lo", "diff_hi", "mcnemar_b", "mcnemar_c", "mcnemar_p")  # fmt: skip


def pct(v: float, lo: float | None = None, hi: float | None = None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    s = f"{v:+.1%}" if signed else f"{v:.1%}"
    if lo is not None and hi is not None:
        s += f" [{lo:+.1%}, {hi:+.1%}]" if signed else f" [{lo:.1%}, {hi:.1%}]"
    return s


def reference_note(label: str, summary: Mapping[str, Any], bootstrapped: bool) -> str:
    """Which way the reference came, for the report: file, sha256, adapter, or bootstrapped."""
    src = summary.get("source") or {}
    way = "bootstrap" if bootstrapped else src.get("way", "checkpoint")
    sha = src.get("sha256") or summary.get("checkpoint_sha256") or ""
    path = src.get("path") or summary.get("checkpoint")
    ident = f"`{path}` (sha256 `{sha[:16]}…`)" if sha else f"`{path}`"
    if way == "bootstrap":
        return (
            f"Reference `{label}`: **bootstrapped here, not the original Trial 69 weights** "
            f"(trained by this workflow under the Trial 69 recipe; {ident})."
        )
    if way == "predictions":
        return (
            f"Reference `{label}`: answers from the predictions file {ident} "
            "(`champion.predictions`, ARC Prize format), scored by the same scorer as every "
            "model; no teacher-forced scores."
        )
    if way == "checkpoint" and summary.get("trained_here"):
        return (
            f"Reference `{label}`: an arctax checkpoint **trained by this workflow, not the "
            f"original Trial 69 weights** ({ident})."
        )
    if way == "adapter":
        return (
            f"Reference `{label}`: the checkpoint {ident} run through the adapter "
            f"`{src.get('adapter')}` (`champion.adapter`); no teacher-forced scores."
        )
    return f"Reference `{label}`: the user-supplied arctax checkpoint {ident}."


def test_set_note(summary: Mapping[str, Any], n_tasks: int) -> str:
    """Which test set, how many tasks it has, and how many of its source were left out whole."""
    left = summary.get("test_left_out") or {}
    ts = summary.get("test_set") or {}
    name = f" `{ts['name']}`" if ts.get("name") else ""
    source = f" ({ts['source']}, version {ts.get('version')})" if ts.get("source") else ""
    n = left.get("n_tasks")
    if not n:
        return f" Test set{name}{source}: {n_tasks} tasks."
    why = "; ".join(f"{k}: {v}" for k, v in sorted((left.get("reasons") or {}).items()))
    return (
        f" Test set{name}{source}: {n_tasks} tasks; **{n} task(s) of the test source left out "
        f"whole** ({why}): a task is scored on all its test inputs or not at all."
    )


def summary_markdown(
    summary: pd.DataFrame,
    per_category: pd.DataFrame,
    audit: pd.DataFrame,
    reference: str,
    ref_note: str,
    ci: float,
    adaptation: bool = False,
    extra: Sequence[str] = (),
) -> str:
    """The terminal-readable report: Markdown tables, CIs, and what every number means;
    ``extra`` lines (the per-example and paper sections) come before the per-category table."""
    c = f"{ci:.0%} CI"
    attempts = int(summary["attempts"].max())
    out = [
        "# arctax comparison",
        "",
        ref_note,
        "",
        f"Scores are over ARC **tasks** (a task is solved when every test query is answered "
        f"exactly); answers are generated greedily (KV cache){', pass@2' if attempts == 2 else ''}. "
        f"Intervals: {c}, percentile bootstrap over tasks (and, with several seeds, the seeds "
        "within each task). Teacher-forced numbers (`tf_*`: ours; `paper_*`: as the paper's code "
        "measured it) score the argmax of each token given the true prefix: they are **not** "
        "generated answers and overstate what a model produces.",
        "",
        "## Generated answers",
        "",
        md_table(
            [
                "model",
                "seeds",
                "tasks",
                f"grid acc [{c}]",
                "seed mean ± std",
                f"shape acc [{c}]",
                f"cell acc [{c}]",
                "parameters (vs champion)",
                "decode tasks/s",
            ],
            [
                [
                    r.model,
                    r.n_seeds,
                    r.n_tasks,
                    pct(r.grid_acc, r.grid_acc_lo, r.grid_acc_hi),
                    f"{r.grid_acc_seed_mean:.1%} ± "
                    + ("n/a" if np.isnan(r.grid_acc_seed_std) else f"{r.grid_acc_seed_std:.1%}"),
                    pct(r.shape_acc, r.shape_acc_lo, r.shape_acc_hi),
                    pct(r.cell_acc, r.cell_acc_lo, r.cell_acc_hi),
                    _size(r.parameters, r.size_vs_champion),
                    "n/a" if np.isnan(r.decode_tasks_per_s) else f"{r.decode_tasks_per_s:.2f}",
                ]
                for r in summary.itertuples()
            ],
        ),
        "",
        *([ADAPTATION_POINTER] if adaptation else []),
        *[f"- ⚠ {line}" for line in size_flags(summary)],
        *([""] if size_flags(summary) else []),
        f"## Against the reference `{reference}` (paired over the same tasks)",
        "",
        md_table(
            [
                "model",
                f"grid acc difference [{c}]",
                "only model solves (b)",
                "only reference solves (c)",
                "exact McNemar p",
            ],
            [
                [
                    r.model,
                    pct(r.diff_vs_ref, r.diff_lo, r.diff_hi, signed=True),
                    r.mcnemar_b,
                    r.mcnemar_c,
                    f"{r.mcnemar_p:.3g}",
                ]
                for r in summary.itertuples()
                if r.model != reference
            ],
        ),
        "",
        "## Teacher-forced, per task (labelled; not generated answers)",
        "",
        md_table(
            [
                "model",
                f"grid acc, {PAPER_LABEL}",
                f"grid acc, {OURS_LABEL}",
                "token acc, ours (markers included: not cells)",
            ],
            [
                [r.model, pct(r.paper_grid_acc), pct(r.tf_grid_acc), pct(r.tf_token_acc)]
                for r in summary.itertuples()
            ],
        ),
        "",
        *extra,
        *([""] if extra else []),
        "## Per taxonomy category (generated grid accuracy)",
        "",
        md_table(
            ["category", "model", "tasks", f"grid acc [{c}]", f"diff vs ref [{c}]", "McNemar p"],
            [
                [
                    r.category,
                    r.model,
                    r.n_tasks,
                    pct(r.grid_acc, r.grid_acc_lo, r.grid_acc_hi),
                    "—"
                    if r.model == reference
                    else pct(r.diff_vs_ref, r.diff_lo, r.diff_hi, signed=True),
                    "—" if r.model == reference else f"{r.mcnemar_p:.3g}",
                ]
                for r in per_category.itertuples()
            ],
        ),
        "",
        "## Trial 69 provenance audit",
        "",
    ]
    out += audit_markdown(audit)
    out += ["", "Figures: `curves.png`, `accuracy.png`, `categories.png`, `gallery.png`.", ""]
    return "\n".join(out)


def _short(value: str, width: int = 40) -> str:
    """A long cell (a checksum, a path) cut for the Markdown table; audit.csv keeps it whole."""
    return value if len(value) <= width else value[: width - 1] + "…"


def _size(parameters: Any, ratio: float) -> str:
    if not _known(parameters):
        return "n/a"
    return f"{int(parameters):,}" + ("" if math.isnan(ratio) else f" ({ratio:+.1%})")


def audit_markdown(audit: pd.DataFrame) -> list[str]:
    """Audited keys down, runs across (the seed note's "Before vs After" table), then reasons:
    the Trial 69 recipe, the training data (``data.*``) and each model's size (``models.*``)."""
    if audit.empty:
        return ["No training runs were audited."]
    dev = audit[audit["match"] == "DEVIATION"]
    runs = list(dict.fromkeys(audit["run"]))
    n_checks = int((audit["match"] != "n/a").sum())
    lines = [
        f"{len(runs)} run(s), {n_checks} key checks, {len(dev)} deviation(s) "
        "(every row in `audit.csv`). ✅ matches Trial 69 (its recipe and data; the paper's model "
        "sizes), ❌ deviates; unmarked rows are recorded, not compared (not published).",
        "",
    ]
    keys = list(dict.fromkeys(audit["key"]))
    mark = {"match": " ✅", "DEVIATION": " ❌", "n/a": ""}
    cell = {(r.run, r.key): f"{_short(r.actual)}{mark[r.match]}" for r in audit.itertuples()}
    expected = {k: _short(v) for k, v in zip(audit["key"], audit["expected"], strict=False)}
    lines.append(
        md_table(
            ["key", "Trial 69 / paper", *runs],
            [[k, expected[k], *(cell.get((r, k), "—") for r in runs)] for k in keys],
        )
    )
    if len(dev):
        cols = ["key", "expected", "actual", "reason"]
        grouped = dev.groupby(cols, sort=False)["run"].agg(", ".join).reset_index()
        lines += [
            "",
            "Deviations and their reasons (runs that share one on a line):",
            "",
            md_table(["runs", *cols], grouped[["run", *cols]].to_numpy()),
        ]
    return lines
