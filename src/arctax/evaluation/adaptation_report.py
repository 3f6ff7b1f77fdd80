"""The adaptation comparison: base vs voting alone vs adaptation + voting, per model, on the
adapted tasks, against the reference; and the gap per taxonomy category.

Reads the folders written by :func:`arctax.evaluation.evaluate.write_evaluation`: the
adaptation stage's three rows per adapted run (``base``: the model's own greedy answer and a
second view's, no voting; ``+vote``; ``+adapt``) and, for a reference that was not adapted,
its evaluation. Every row is restricted to the adapted tasks (``adapt.max_tasks`` may adapt a
subset) and shows pass@1 (the first attempt) and pass@2 for the same tasks, with the same
paired statistics as the main comparison. When adaptation loses more tasks than it gains for
a model, the report says so first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from arctax.evaluation import plots
from arctax.evaluation.compare import load_evals, pct
from arctax.evaluation.markdown import md_table
from arctax.evaluation.stats import bootstrap_ci, model_row, per_task_matrix, task_table
from arctax.io import atomic_write_text
from arctax.settings import METHOD, Adapt, Eval

PathLike = str | Path
KINDS = ("", "+vote", "+adapt")
VS_KEYS = ("diff_vs_ref", "diff_lo", "diff_hi", "mcnemar_b", "mcnemar_c", "mcnemar_p")


def first_attempt(per_query: pd.DataFrame, model: str, ids: pd.Index) -> pd.Series:
    """Per task of ``ids``: the share of seeds whose FIRST attempts solve every query."""
    rows = per_query[(per_query["model"] == model) & per_query["task_id"].isin(ids)]
    solved = rows.groupby(["seed", "task_id"])["grid_correct_first"].all()
    return solved.groupby("task_id").mean().reindex(ids)


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
    ev: Eval,
    eval_dirs: Mapping[str, PathLike | Sequence[PathLike]],
    adapt_dirs: Mapping[str, Mapping[str, Sequence[PathLike]]],
    out_dir: PathLike,
    reference: str,
) -> dict[str, Any]:
    """Write ``adaptation.csv``, ``gap.csv``, ``gap.png`` and ``adaptation.md`` in ``out_dir``.

    ``adapt_dirs`` maps a model label to ``{"base": [...], "vote": [...], "adapt": [...]}``
    folders (one per seed; without ``base`` the model's evaluation in ``eval_dirs`` is its
    base row); ``eval_dirs`` holds the base evaluations, the reference's included.
    """
    out_dir = Path(out_dir)
    boot = (ev.bootstrap_samples, float(ev.ci), ev.seed)
    bases = list(adapt_dirs)
    dirs: dict[str, Any] = {}
    for label in dict.fromkeys([reference, *bases]):
        given = adapt_dirs.get(label, {})
        dirs[label] = given.get("base") or eval_dirs[label]
        if given:
            dirs[f"{label}+vote"] = given["vote"]
            dirs[f"{label}+adapt"] = given["adapt"]
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
            est = bootstrap_ci(first_attempt(per_query, name, ids).to_numpy(), *boot)
            r.update(pass1=est.mean, pass1_lo=est.lo, pass1_hi=est.hi)
            if kind == "+adapt":
                vs = model_row(tasks, name, f"{base}+vote", ids, boot)
                r.update({f"vs_vote_{k}": vs[k] for k in VS_KEYS})
            adaptation = (summaries[name][0].get("adaptation") or {}) if kind else {}
            r["tasks_per_s"] = adaptation.get("tasks_per_s")
            r["steps_mean"] = adaptation.get("steps_mean")
            rows.append(r)
    table = pd.DataFrame(rows)
    gap = gap_table(tasks, bases, ids)
    atomic_write_text(out_dir / "adaptation.csv", table.to_csv(index=False))
    atomic_write_text(out_dir / "gap.csv", gap.to_csv(index=False))
    plots.plot_gap(gap, out_dir / "gap.png")
    md = adaptation_markdown(table, gap, reference, len(ids), boot[1], summaries)
    atomic_write_text(out_dir / "adaptation.md", md)
    return {"n_tasks": len(ids), "rows": table.to_dict(orient="records")}


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if v is not None and pd.notna(v) else ""


def _cells(r: Mapping[str, Any], reference: str) -> list[str]:
    """One row of the adaptation table."""
    is_ref, adapted = r["model"] == reference, str(r["model"]).endswith("+adapt")
    return [
        r["model"],
        str(r["attempts"]),
        pct(r["pass1"], r["pass1_lo"], r["pass1_hi"]),
        pct(r["grid_acc"], r["grid_acc_lo"], r["grid_acc_hi"]),
        "—" if is_ref else pct(r["diff_vs_ref"], r["diff_lo"], r["diff_hi"], signed=True),
        "—" if is_ref else f"{r['mcnemar_p']:.3g}",
        pct(r["vs_vote_diff_vs_ref"], r["vs_vote_diff_lo"], r["vs_vote_diff_hi"], signed=True)
        if adapted
        else "",
        f"{int(r['vs_vote_mcnemar_b'])} / {int(r['vs_vote_mcnemar_c'])}" if adapted else "",
        f"{r['vs_vote_mcnemar_p']:.3g}" if adapted else "",
        _num(r.get("steps_mean"), ".1f") if adapted else "",
        _num(r.get("tasks_per_s"), ".3g"),
    ]


GAP_COLUMNS = {
    "model": "model", "category": "category", "n_tasks": "tasks", "solved_base": "base",
    "solved_vote": "vote", "solved_adapt": "adapt",
    "only_after_adaptation": "only after adaptation", "lost_by_adaptation": "lost",
    "adapt_not_base": "adapt, not base",
}  # fmt: skip


def harm_warnings(table: pd.DataFrame) -> list[str]:
    """One sentence per model whose ``+adapt`` loses more tasks than it gains vs ``+vote``."""
    out = []
    for r in table.to_dict(orient="records"):
        if not str(r["model"]).endswith("+adapt"):
            continue
        gained, lost = int(r["vs_vote_mcnemar_b"]), int(r["vs_vote_mcnemar_c"])
        if lost > gained:
            base = str(r["model"]).removesuffix("+adapt")
            out.append(
                f"**Adaptation harms `{base}` here: it loses {lost} task(s) that voting alone "
                f"solves and gains {gained} (pass@2 {r['vs_vote_diff_vs_ref']:+.1%} vs "
                f"`{base}+vote`, exact McNemar p = {r['vs_vote_mcnemar_p']:.3g}).** Do not read "
                "its `+adapt` row as a result of adaptation: with these settings the adapter "
                "makes the model worse (docs/results/ADAPTATION.md shows the settings measured to help)."
            )
    return out


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
    setup = next(
        (s[0].get("adaptation", {}) for k, s in summaries.items() if k.endswith("+adapt")), {}
    )
    keys = Adapt.names(METHOD)
    header = [
        "model", "attempts", f"pass@1 (first attempt) [{c}]", f"pass@2 [{c}]",
        f"pass@2 diff vs ref [{c}]", "McNemar p vs ref", f"adapt − vote, pass@2 [{c}]",
        "gained / lost vs vote", "McNemar p vs vote", "steps (mean)", "tasks/s",
    ]  # fmt: skip
    warnings = harm_warnings(table)
    verdict = warnings or [
        "Adaptation loses no more tasks than it gains against voting alone for any model here."
    ]
    return "\n".join([
        "# arctax adaptation (test-time training)",
        "",
        *[line for w in verdict for line in (w, "")],
        f"On the {n_tasks} adapted test tasks; every row on the same tasks. Rows: the model "
        "itself (`<model>`: its greedy answer, and as attempt 2 its answer under one augmented "
        "view, no voting), voting over augmented views without adaptation (`+vote`), and a "
        "LoRA adapter fitted per task on its demonstration pairs, then the same views "
        "(`+adapt`). pass@1 scores the first attempt, pass@2 either of two. Adaptation: "
        + ", ".join(f"{k} {setup[k]}" for k in keys if setup.get(k) is not None)
        + f". Intervals: {c}, bootstrap over tasks; differences (pass@2) are paired against "
        f"the reference `{reference}` and, for `+adapt`, against `+vote` (gained: tasks only "
        "`+adapt` solves; lost: only `+vote`). `steps (mean)`: optimizer steps per task after "
        "the held-out selection.",
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
