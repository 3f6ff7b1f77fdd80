"""The adaptation comparison: base vs voting alone vs adaptation + voting, per model, on the
adapted tasks, against the reference; and the gap per taxonomy category.

Reads the folders written by :func:`arctax.evaluation.evaluate.write_evaluation` (the models'
and the reference's evaluations, and the ``+vote`` / ``+adapt`` rows gathered by the
adaptation stage). Every row is restricted to the adapted tasks (``adapt.max_tasks`` may adapt
a subset), so base, voting and adapted are compared on the same tasks with the same paired
statistics as the main comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from arctax.config import get
from arctax.evaluation import plots
from arctax.evaluation.compare import load_evals, md_table, pct
from arctax.evaluation.stats import model_row, per_task_matrix, task_table
from arctax.io import atomic_write_text

PathLike = str | Path
KINDS = ("", "+vote", "+adapt")
VS_KEYS = ("diff_vs_ref", "diff_lo", "diff_hi", "mcnemar_b", "mcnemar_c", "mcnemar_p")


def gap_table(tasks: pd.DataFrame, bases: Sequence[str], ids: pd.Index) -> pd.DataFrame:
    """Per model and category (and ``all``): tasks solved by base, voting, adaptation, and the
    gap: solved only after adaptation (not by voting alone), and lost by it."""
    solved = per_task_matrix(tasks[tasks["task_id"].isin(ids)], "grid_correct") >= 0.5
    category = tasks.drop_duplicates("task_id").set_index("task_id")["category"].astype(str)
    rows = []
    for base in bases:
        b, v, a = (solved[f"{base}{k}"] for k in KINDS)
        for cat in [*sorted(category.loc[ids].unique()), "all"]:
            sel = ids if cat == "all" else ids[category.loc[ids].to_numpy() == cat]
            rows.append({
                "model": base, "category": cat, "n_tasks": len(sel),
                "solved_base": int(b[sel].sum()), "solved_vote": int(v[sel].sum()),
                "solved_adapt": int(a[sel].sum()),
                "only_after_adaptation": int((a[sel] & ~v[sel]).sum()),
                "lost_by_adaptation": int((v[sel] & ~a[sel]).sum()),
                "adapt_not_base": int((a[sel] & ~b[sel]).sum()),
            })  # fmt: skip
    return pd.DataFrame(rows)


def compare_adaptation(
    cfg: Mapping[str, Any],
    eval_dirs: Mapping[str, PathLike | Sequence[PathLike]],
    adapt_dirs: Mapping[str, Mapping[str, Sequence[PathLike]]],
    out_dir: PathLike,
    reference: str,
) -> dict[str, Any]:
    """Write ``adaptation.csv``, ``gap.csv``, ``gap.png`` and ``adaptation.md`` in ``out_dir``.

    ``adapt_dirs`` maps a model label to ``{"vote": [folders], "adapt": [folders]}`` (one per
    seed); ``eval_dirs`` holds the base evaluations, the reference's included.
    """
    out_dir = Path(out_dir)
    boot = (
        int(get(cfg, "eval.bootstrap_samples")),
        float(get(cfg, "eval.ci")),
        int(get(cfg, "eval.seed")),
    )
    bases = list(adapt_dirs)
    dirs: dict[str, Any] = {reference: eval_dirs[reference]}
    for base in bases:
        dirs[base] = eval_dirs[base]
        dirs[f"{base}+vote"] = adapt_dirs[base]["vote"]
        dirs[f"{base}+adapt"] = adapt_dirs[base]["adapt"]
    per_query, summaries = load_evals(dirs)
    tasks = task_table(per_query)
    adapted = {b: set(tasks.loc[tasks["model"] == f"{b}+adapt", "task_id"]) for b in bases}
    first = next(iter(adapted.values()))
    if any(s != first for s in adapted.values()):
        raise ValueError(
            "the adapted runs cover different tasks; adapt every run on the same split"
        )
    ids = pd.Index(sorted(first))
    rows = []
    for base in [reference, *[b for b in bases if b != reference]]:
        for kind in KINDS if base in adapt_dirs else ("",):
            name = f"{base}{kind}"
            r = model_row(tasks, name, reference, ids, boot)
            r["attempts"] = int(per_query.loc[per_query["model"] == name, "attempts"].max())
            first_acc = per_query[per_query["model"] == name].groupby(["seed", "task_id"])
            r["first_attempt_grid_acc"] = float(first_acc["grid_correct_first"].all().mean())
            if kind == "+adapt":
                vs = model_row(tasks, name, f"{base}+vote", ids, boot)
                r.update({f"vs_vote_{k}": vs[k] for k in VS_KEYS})
            adaptation = (summaries[name][0].get("adaptation") or {}) if kind else {}
            r["tasks_per_s"] = adaptation.get("tasks_per_s")
            rows.append(r)
    table = pd.DataFrame(rows)
    gap = gap_table(tasks, bases, ids)
    atomic_write_text(out_dir / "adaptation.csv", table.to_csv(index=False))
    atomic_write_text(out_dir / "gap.csv", gap.to_csv(index=False))
    plots.plot_gap(gap, out_dir / "gap.png")
    md = adaptation_markdown(table, gap, reference, len(ids), boot[1], summaries)
    atomic_write_text(out_dir / "adaptation.md", md)
    return {"n_tasks": len(ids), "rows": table.to_dict(orient="records")}


def _cells(r: Mapping[str, Any], reference: str) -> list[str]:
    """One row of the adaptation table."""
    is_ref, adapted = r["model"] == reference, str(r["model"]).endswith("+adapt")
    speed = r.get("tasks_per_s")
    return [
        r["model"],
        str(r["attempts"]),
        pct(r["grid_acc"], r["grid_acc_lo"], r["grid_acc_hi"]),
        pct(r["first_attempt_grid_acc"]),
        "—" if is_ref else pct(r["diff_vs_ref"], r["diff_lo"], r["diff_hi"], signed=True),
        "—" if is_ref else f"{r['mcnemar_p']:.3g}",
        pct(r["vs_vote_diff_vs_ref"], r["vs_vote_diff_lo"], r["vs_vote_diff_hi"], signed=True)
        if adapted
        else "",
        f"{r['vs_vote_mcnemar_p']:.3g}" if adapted else "",
        f"{speed:.3g}" if speed is not None and pd.notna(speed) else "",
    ]


GAP_COLUMNS = {
    "model": "model", "category": "category", "n_tasks": "tasks", "solved_base": "base",
    "solved_vote": "vote", "solved_adapt": "adapt",
    "only_after_adaptation": "only after adaptation", "lost_by_adaptation": "lost",
    "adapt_not_base": "adapt, not base",
}  # fmt: skip


def adaptation_markdown(
    table: pd.DataFrame,
    gap: pd.DataFrame,
    reference: str,
    n_tasks: int,
    ci: float,
    summaries: Mapping[str, list[dict]],
) -> str:
    """The terminal-readable adaptation comparison."""
    c = f"{ci:.0%} CI"
    setup = next((s[0]["adaptation"] for k, s in summaries.items() if k.endswith("+adapt")), {})
    keys = ("steps", "rank", "alpha", "augment_views", "voting_views", "lr")
    header = [
        "model", "attempts", f"grid acc [{c}]", "first attempt", f"diff vs ref [{c}]",
        "McNemar p vs ref", f"adapt − vote [{c}]", "McNemar p vs vote", "tasks/s",
    ]  # fmt: skip
    return "\n".join([
        "# arctax adaptation (test-time training)",
        "",
        f"On the {n_tasks} adapted test tasks. Rows: the model as evaluated (`base`), voting over "
        "augmented views without adaptation (`+vote`), and a LoRA adapter fitted per task on its "
        "demonstration pairs, then the same voting (`+adapt`). Voting rows are pass@2 (the two "
        "most voted answers). Adaptation: "
        + ", ".join(f"{k} {setup[k]}" for k in keys if k in setup)
        + f". Intervals: {c}, bootstrap over tasks; differences are paired against the "
        f"reference `{reference}` (as evaluated) and, for `+adapt`, against `+vote`.",
        "",
        md_table(header, [_cells(r, reference) for r in table.to_dict(orient="records")]),
        "",
        "## Gap per taxonomy category",
        "",
        "Tasks solved only after adaptation (by `+adapt`, not by `+vote`: the adapter, not the "
        "voting, made the difference) and tasks adaptation lost. Figure: `gap.png`.",
        "",
        md_table(list(GAP_COLUMNS.values()), gap[list(GAP_COLUMNS)].to_numpy()),
        "",
    ])  # fmt: skip
