"""The tables of docs/results/ADAPTATION.md: per model and condition, base / +vote / +adapt, the targets,
and the ablation. Statistics come from ``arctax.evaluation.stats`` (bootstrap CIs over tasks,
paired differences, exact McNemar); the rows are the ``per_task.csv`` files the adaptation
stage wrote (``gather``), so the scorer is the project's one scorer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from harness import machine

from arctax.data import families
from arctax.evaluation.compare import md_table, pct
from arctax.evaluation.stats import bootstrap_ci, mcnemar, paired_bootstrap
from arctax.io import atomic_write_text
from arctax.settings import METHOD, Adapt

KINDS = {"base": "base", "vote": "+vote", "adapt": "+adapt"}
CONDITION_NAMES = {
    "in_distribution": "in-distribution (the trained rules)",
    "view_reachable": "a rule reachable by a view (dihedral conjugates of the trained rules)",
    "new_rule": "a new rule, learnable only from the demonstrations (per-task colour mapping)",
    "far_rule": "a far rule: a kind never trained, no view reaches it (transpose, shift, copy, frame)",
}
FAR_LIFT = 0.10  # the far condition's target: +adapt above +vote by 10 points, p < 0.05
FAR_TARGET_MODELS = ("champion",)  # the model that reads its demonstrations
MARKERS = {"results": "results", "ablation": "ablation"}


def load_run(run_dir: Path) -> pd.DataFrame:
    """One row per (task, kind): pass@1, pass@2, condition, steps taken by the adapter."""
    frames = []
    for kind in KINDS:
        df = pd.read_csv(run_dir / kind / "per_task.csv", dtype={"task_id": str})
        g = df.groupby("task_id").agg(
            pass1=("grid_correct_first", "all"), pass2=("grid_correct", "all"),
            condition=("category", "first"),
        )  # fmt: skip
        frames.append(g.assign(kind=kind).reset_index())
    return pd.concat(frames, ignore_index=True)


def steps_by_condition(run_dir: Path) -> dict[str, float]:
    """Mean optimizer steps the selection kept, per condition (from the shards' records)."""
    import json

    labels = pd.read_csv(run_dir / "adapt" / "per_task.csv", dtype={"task_id": str})
    cond = dict(zip(labels["task_id"], labels["category"], strict=False))
    steps: dict[str, list[int]] = {}
    for shard in sorted((run_dir / "shards").glob("*.json")):
        for rec in json.loads(shard.read_text())["records"]:
            steps.setdefault(cond.get(rec["task_id"], "?"), []).append(rec["steps"])
    return {c: sum(v) / len(v) for c, v in steps.items()}


def compare_rows(df: pd.DataFrame, boot: tuple[int, float, int]) -> dict[str, Any]:
    """Accuracies and the paired tests of one model on one condition's tasks."""
    n, ci, seed = boot
    wide = {k: df[df["kind"] == k].set_index("task_id").sort_index() for k in KINDS}
    out: dict[str, Any] = {"n": len(wide["adapt"])}
    for k, w in wide.items():
        for col in ("pass1", "pass2"):
            e = bootstrap_ci(w[col].to_numpy(float), n, ci, seed)
            out[f"{k}_{col}"] = (e.mean, e.lo, e.hi)
    for a, b in (("adapt", "vote"), ("vote", "base"), ("adapt", "base")):
        x, y = wide[a]["pass2"].to_numpy(bool), wide[b]["pass2"].to_numpy(bool)
        d = paired_bootstrap(x.astype(float), y.astype(float), n, ci, seed)
        gained, lost, p = mcnemar(x, y)
        out[f"{a}_vs_{b}"] = {"diff": (d.mean, d.lo, d.hi), "gained": gained, "lost": lost,
                              "p": p}  # fmt: skip
    return out


def _p(v: float) -> str:
    return f"{v:.2g}" if v < 0.01 else f"{v:.3f}"


def targets(stats: Mapping[str, Mapping[str, Any]], model: str) -> list[tuple[str, str, bool, str]]:
    """(condition, target, met, the numbers) for one model."""
    rows = []
    far = "far" if model in FAR_TARGET_MODELS else None
    for cond, rule in (("in_distribution", "not below"), ("view_reachable", "not below"),
                       ("new_rule", "above"), ("far_rule", far)):  # fmt: skip
        if cond not in stats or rule is None:
            continue
        t = stats[cond]["adapt_vs_vote"]
        diff, p = t["diff"][0], t["p"]
        if rule == "far":
            met = diff >= FAR_LIFT - 1e-9 and p < 0.05
            what = f"+adapt above +vote by >= {FAR_LIFT:.0%} points, p < 0.05"
        elif rule == "above":
            met = diff > 0 and p < 0.05
            what = "+adapt above +vote, p < 0.05"
        else:
            met = p > 0.05 and diff >= -0.02
            what = "+adapt not significantly below +vote (p > 0.05, within 2 points)"
        if cond == "view_reachable":
            lift = stats[cond]["adapt_vs_base"]
            met = met and lift["diff"][0] > 0
            what += "; and above base"
        nums = (f"{stats[cond]['vote_pass2'][0]:.1%} → {stats[cond]['adapt_pass2'][0]:.1%} "
                f"(pass@2; {diff:+.1%}, +{t['gained']} / −{t['lost']}, p = {_p(p)})")  # fmt: skip
        rows.append((cond, what, met, nums))
    return rows


def condition_table(stats: Mapping[str, Mapping[str, Any]], ci: float) -> str:
    """Rows base / +vote / +adapt of every model for one condition."""
    c = f"{ci:.0%} CI"
    header = ["model", "row", f"pass@1 [{c}]", f"pass@2 [{c}]",
              f"vs +vote: pass@2 diff [{c}]", "gained / lost", "exact McNemar p"]  # fmt: skip
    rows = []
    for model, s in stats.items():
        for k, name in KINDS.items():
            vs = s.get(f"{k}_vs_vote") if k == "adapt" else s.get(f"{k}_vs_base")
            rows.append([
                model if k == "base" else "", name, pct(*s[f"{k}_pass1"]), pct(*s[f"{k}_pass2"]),
                pct(*vs["diff"], signed=True) + (" (vs base)" if k == "vote" else "")
                if vs else "",
                f"+{vs['gained']} / −{vs['lost']}" if vs else "", _p(vs["p"]) if vs else "",
            ])  # fmt: skip
    return md_table(header, rows)


def _stats(gathered: Mapping[tuple[str, str], Path], variant: str, boot) -> dict:
    out: dict[str, dict[str, Any]] = {}
    for (name, model), run_dir in gathered.items():
        if name != variant:
            continue
        df = load_run(run_dir)
        for cond in families.CONDITIONS:
            sub = df[df["condition"] == cond]
            if len(sub):
                out.setdefault(cond, {})[model] = compare_rows(sub, boot)
    return out


def _summary(run_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((run_dir / "adapt" / "summary.json").read_text())["adaptation"]


def _steps(run_dir: Path) -> float | None:
    return _summary(run_dir).get("steps_mean")


def _setup(meta: Mapping[str, Any]) -> str:
    a, s = meta["adapt"], meta["settings"]
    keys = Adapt.names(METHOD)
    trained = ", ".join(f"{m} {r['epochs_run']} epochs in {r['seconds']:.0f} s"
                        for m, r in meta["trained"].items()) or "reused from --work"  # fmt: skip
    return (
        f"Command: `{meta['command']}` (`make bench-adapt-science`), {meta['date']}, wall time "
        f"**{meta['elapsed_s'] / 60:.1f} min** with {meta['jobs']} worker processes (one torch "
        f"thread each); training: {trained}; adaptation: {meta['adapt_seconds']:.0f} s of "
        f"worker time. Machine: {machine()}; load average (1 min) at start / end "
        f"{meta['load']} (a shared 2-core machine: other processes ran beside it).\n\n"
        f"Data: {s['train_per_family']} training tasks per trained rule "
        f"({', '.join(families.TRAINED)}; 3 demonstrations + 1 test pair each, every pair a "
        "training query), random 3x3..5x5 grids; models: the demo sizes of `config/demo.yaml`, "
        f"Trial 69 recipe (at most {s['epochs']} epochs, its early stopping on val_loss), no "
        "augmented copies (so a dihedral conjugate of a trained rule is never trained). "
        "Adaptation: the shipped defaults, "
        + ", ".join(f"{k} {a[k]}" for k in keys if k in a)
        + f". Intervals: {s['bootstrap']} bootstrap resamples over tasks, 95%; McNemar: exact, "
        "two-sided, on pass@2."
    )


def family_of(task_id: str, condition: str) -> str:
    """The rule of a generated task: ``<split>-<condition>-<i>`` cycles its condition's rules."""
    rules = families.CONDITIONS.get(condition, (condition,))
    return rules[int(task_id.rsplit("-", 1)[1]) % len(rules)]


def before_after(gathered: Mapping[tuple[str, str], Path], former: str) -> str:
    """The former method against the shipped one on the same tasks: pass@2 of +adapt per
    condition (and per rule of the far condition), steps kept, tasks per second."""
    rows = []
    for (name, m), shipped in gathered.items():
        if name != "shipped defaults" or (former, m) not in gathered:
            continue
        old_dir = gathered[(former, m)]
        runs = {"former": load_run(old_dir), "shipped": load_run(shipped)}
        steps = {k: steps_by_condition(d) for k, d in (("former", old_dir), ("shipped", shipped))}
        for cond in families.CONDITIONS:
            groups = [(cond, None)]
            if cond == "far_rule":
                groups += [(cond, r) for r in families.FAR_RULE]
            for c, rule in groups:
                cells = []
                for k in ("former", "shipped"):
                    df = runs[k][(runs[k]["condition"] == c) & (runs[k]["kind"] == "adapt")]
                    if rule is not None:
                        df = df[[family_of(t, c) == rule for t in df["task_id"]]]
                    if not len(df):
                        break
                    cells.append(f"{int(df['pass2'].sum())}/{len(df)} ({df['pass2'].mean():.0%})")
                if len(cells) < 2:
                    continue
                a = runs["former"].query("kind == 'adapt'").set_index("task_id")["pass2"]
                b = runs["shipped"].query("kind == 'adapt'").set_index("task_id")["pass2"]
                ids = runs["shipped"].query("kind == 'adapt' and condition == @c")["task_id"]
                if rule is not None:
                    ids = [t for t in ids if family_of(t, c) == rule]
                gained, lost, p = mcnemar(b[ids].to_numpy(bool), a[ids].to_numpy(bool))
                label = c if rule is None else f"  {c}: {rule}"
                st = "" if rule else (f"{steps['former'].get(c, 0):.1f} → "
                                      f"{steps['shipped'].get(c, 0):.1f}")  # fmt: skip
                rows.append([m, label, *cells, f"+{gained} / −{lost}", _p(p), st])
        speed = [_summary(d) for d in (old_dir, shipped)]
        rows.append([m, "all (tasks / s)", *(f"{x['tasks'] / x['seconds']:.2f}" for x in speed),
                     "", "", ""])  # fmt: skip
    header = ["model", "condition", "+adapt pass@2, former", "+adapt pass@2, shipped",
              "gained / lost", "exact McNemar p", "steps kept (mean)"]  # fmt: skip
    return md_table(header, rows)


def results_section(gathered: Mapping[tuple[str, str], Path], cfg: Any,
                    meta: Mapping[str, Any], former: str | None = None) -> str:  # fmt: skip
    """The results on the test tasks: targets first, then a table per condition, then the
    former method against the shipped one (``former``: its variant's name)."""
    boot = (meta["settings"]["bootstrap"], 0.95, 0)
    stats = _stats(gathered, "shipped defaults", boot)
    per_model: dict[str, dict] = {}
    for cond, by_model in stats.items():
        for m, s in by_model.items():
            per_model.setdefault(m, {})[cond] = s
    target_rows, missed = [], []
    for m, by_cond in per_model.items():
        for cond, what, met, nums in targets(by_cond, m):
            target_rows.append([m, cond, what, "**met**" if met else "**NOT met**", nums])
            if not met:
                missed.append(f"{m} / {cond}")
    shipped = {m: d for (name, m), d in gathered.items() if name == "shipped defaults"}
    steps = {m: _steps(d) for m, d in shipped.items()}
    conds = [c for c in families.CONDITIONS if c in stats]
    step_rows = []
    for m, d in shipped.items():
        by = steps_by_condition(d)
        summ = _summary(d)
        step_rows.append([m, *(f"{by[c]:.1f}" if c in by else "" for c in conds),
                          f"{summ['tasks'] / summ['seconds']:.2f}"])  # fmt: skip
    verdict = (
        "All targets met."
        if not missed
        else f"**Targets not met: {', '.join(missed)}** (numbers below)."
    )
    n = meta["settings"]["test_per_condition"]
    out = [
        "## Results on the test tasks",
        "",
        _setup(meta),
        "",
        f"{n} test tasks per condition (seed 2; the dev tasks of the ablation are seed 3). "
        "Rows: `base` is the model's greedy answer (pass@1) and, as attempt 2, its answer "
        "under one augmented view, no voting; `+vote` votes over the views; `+adapt` fits a "
        "LoRA adapter per task on its demonstrations, then answers under the same views. "
        "gained / lost: tasks only the row solves / only the row compared with solves.",
        "",
        "### Targets",
        "",
        verdict,
        "",
        md_table(["model", "condition", "target", "", "+vote → +adapt"], target_rows),
        "",
        "Mean optimizer steps per task after the held-out selection: "
        + ", ".join(f"{m} {v:.1f}" for m, v in steps.items() if v is not None)
        + ". Per condition, and the cost (tasks adapted per second of worker time: voting, "
        "selection, fitting, answering; one torch thread):",
        "",
        md_table(["model", *(f"steps kept: {c}" for c in conds), "tasks / s"], step_rows),
    ]
    for cond, by_model in stats.items():
        out += ["", f"### {CONDITION_NAMES[cond]}", "", condition_table(by_model, 0.95)]
    if former is not None and any(name == former for name, _ in gathered):
        out += ["", "### Before and after: the former method on the same test tasks", "",
                f"The former method ({former}) and the shipped one, both run by this command "
                "on the same tasks and models. gained / lost: tasks only the shipped method "
                "solves / only the former one solves (pass@2). The far condition is split by "
                "rule.", "", before_after(gathered, former)]  # fmt: skip
    return "\n".join(out) + "\n"


def ablation_section(gathered: Mapping[tuple[str, str], Path], variants: Mapping[str, Any],
                     cfg: Any, meta: Mapping[str, Any]) -> str:  # fmt: skip
    """One row per variant: pass@2 of +vote and +adapt per condition, and the cost."""
    boot = (meta["settings"]["bootstrap"], 0.95, 0)
    header = ["variant (change to the shipped defaults)", "model"]
    for cond in families.CONDITIONS:
        header += [f"{cond}: +vote → +adapt (gained / lost)"]
    header += ["steps (mean)", "s / task"]
    rows = []
    for name in variants:
        for (v, m), run_dir in gathered.items():
            if v != name:
                continue
            df = load_run(run_dir)
            cells = [name, m]
            for cond in families.CONDITIONS:
                s = compare_rows(df[df["condition"] == cond], boot)
                t = s["adapt_vs_vote"]
                cells.append(f"{s['vote_pass2'][0]:.0%} → {s['adapt_pass2'][0]:.0%} "
                             f"(+{t['gained']} / −{t['lost']})")  # fmt: skip
            import json

            summ = json.loads((run_dir / "adapt" / "summary.json").read_text())["adaptation"]
            cells += [f"{summ.get('steps_mean') or 0:.1f}",
                      f"{summ['seconds'] / summ['tasks']:.2f}"]  # fmt: skip
            rows.append(cells)
    n = meta["settings"]["dev_per_condition"]
    return "\n".join([
        "## Ablation on the dev tasks",
        "",
        _setup(meta).replace("(`make bench-adapt-science`)", "(`make bench-adapt-ablation`)"),
        "",
        f"{n} dev tasks per condition, drawn from another seed than the test tasks: the "
        "shipped defaults were chosen on these, never on the test tasks. pass@2; s / task is "
        "worker time per adapted task (voting, selection, fitting, answering).",
        "",
        md_table(header, rows),
        "",
    ])  # fmt: skip


HEAD = """# Per-task adaptation on a learnable benchmark

Written by `experiments/bench_adapt_science.py` (each section by the command it names; the
file is rewritten atomically, the other section kept). The benchmark: task families with
known rules (`arctax.data.families`), trained models, and four test conditions;
`docs/ADAPTATION.md` says how the method works.
"""


def write_sections(path: Path, **sections: str) -> str:
    """Replace the named sections of ``path`` (``results``, ``ablation``), keep the others."""
    old = path.read_text() if path.is_file() else ""
    parts = {}
    for key in MARKERS:
        m = re.search(rf"<!-- {key} -->\n(.*?)<!-- /{key} -->\n", old, re.S)
        parts[key] = sections.get(key, m.group(1) if m else "")
    body = "".join(f"<!-- {k} -->\n{v}<!-- /{k} -->\n\n" for k, v in parts.items() if v)
    text = HEAD + "\n" + body
    atomic_write_text(path, text)
    return text
