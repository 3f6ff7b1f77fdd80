"""The adaptation report: every row on the adapted tasks only (the first-attempt column too),
pass@1 and pass@2 side by side, and a warning in words when adaptation does harm."""

from __future__ import annotations

import pandas as pd

from arctax.evaluation.adaptation_report import compare_adaptation
from arctax.evaluation.evaluate import TF_COLUMNS
from arctax.evaluation.submission import SCORE_COLUMNS
from arctax.settings import load_settings

TASKS = ["t1", "t2", "t3", "t4"]


def _write(folder, first: dict[str, bool], second: dict[str, bool], tasks=TASKS) -> str:
    """A per_task.csv with one query per task: attempt 1 right on ``first``, either attempt
    right on ``first`` or ``second``."""
    rows = []
    for t in tasks:
        ok1 = first.get(t, False)
        ok = ok1 or second.get(t, False)
        rows.append({
            "model": "m", "seed": 1, "task_id": t, "category": "c", "query": 0,
            "gen_shape": "1x1", "target_shape": "1x1", "shape_correct": True,
            "grid_correct": ok, "grid_correct_first": ok1, "cell_acc": float(ok),
            "attempts": 2, **dict.fromkeys(TF_COLUMNS, float("nan")),
        })  # fmt: skip
    folder.mkdir(parents=True)
    pd.DataFrame(rows, columns=[*SCORE_COLUMNS, *TF_COLUMNS]).to_csv(
        folder / "per_task.csv", index=False
    )
    return str(folder)


def _cfg():
    return load_settings(overrides={"eval": {"bootstrap_samples": 200}}).eval


def test_first_attempt_counts_only_the_adapted_tasks(tmp_path):
    """The base evaluation covers 4 tasks; only t1, t2 were adapted. By hand, on {t1, t2}:
    base first attempt 1/2 (t1; t3 and t4 are outside and must not count: 3/4 if they did),
    base pass@2 1/2; +vote first 0/2, pass@2 2/2; +adapt first 2/2, pass@2 2/2."""
    ev = {
        "ref": _write(tmp_path / "ref", {}, {}),
        "m": _write(tmp_path / "m", {"t1": True, "t3": True, "t4": True}, {}),
    }
    sub = ["t1", "t2"]
    adapt = {"m": {
        "vote": [_write(tmp_path / "v", {}, {"t1": True, "t2": True}, sub)],
        "adapt": [_write(tmp_path / "a", {"t1": True, "t2": True}, {}, sub)],
    }}  # fmt: skip
    out = compare_adaptation(_cfg(), ev, adapt, tmp_path / "out", "ref")
    rows = {r["model"]: r for r in out["rows"]}
    assert out["n_tasks"] == 2
    assert rows["m"]["pass1"] == 0.5 and rows["m"]["grid_acc"] == 0.5
    assert rows["m+vote"]["pass1"] == 0.0 and rows["m+vote"]["grid_acc"] == 1.0
    assert rows["m+adapt"]["pass1"] == 1.0 and rows["m+adapt"]["grid_acc"] == 1.0
    md = (tmp_path / "out" / "adaptation.md").read_text()
    assert "| m | 2 | 50.0% [" in md  # pass@1 beside pass@2, the same two tasks
    assert "loses no more tasks than it gains" in md and "harms" not in md


def test_the_stage_base_row_replaces_the_evaluation_and_harm_is_said_first(tmp_path):
    ev = {"ref": _write(tmp_path / "ref", {}, {}), "m": _write(tmp_path / "m", {}, {})}
    sub = ["t1", "t2", "t3"]
    solved = dict.fromkeys(sub, True)
    adapt = {"m": {
        "base": [_write(tmp_path / "b", {"t2": True}, {"t3": True}, sub)],
        "vote": [_write(tmp_path / "v", solved, {}, sub)],
        "adapt": [_write(tmp_path / "a", {"t1": True}, {}, sub)],
    }}  # fmt: skip
    out = compare_adaptation(_cfg(), ev, adapt, tmp_path / "out", "ref")
    rows = {r["model"]: r for r in out["rows"]}
    assert rows["m"]["pass1"] == 1 / 3 and rows["m"]["grid_acc"] == 2 / 3
    assert (rows["m+adapt"]["vs_vote_mcnemar_b"], rows["m+adapt"]["vs_vote_mcnemar_c"]) == (0, 2)
    md = (tmp_path / "out" / "adaptation.md").read_text()
    top = md.split("| model |")[0]
    assert "Adaptation harms `m` here: it loses 2 task(s)" in top and "gains 0" in top
