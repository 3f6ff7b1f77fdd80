"""The ladder benchmark runs end to end on tiny sizes (so it cannot rot) and its tables' intervals
and paired steps are what they claim."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "experiments"), str(REPO / "benchmarks")]

import bench_ladder  # noqa: E402


def _per_query(solved: dict[str, list[int]], seeds=(307,)) -> pd.DataFrame:
    """Per-query rows: ``solved[label][i]`` for task i of group gravity (one query each), the
    same for every seed and measurement."""
    rows = []
    for label, flags in solved.items():
        for seed in seeds:
            for i, ok in enumerate(flags):
                rows.append({"model": label, "seed": seed, "task_id": f"t{i}",
                             "category": "gravity", "grid_correct": bool(ok),
                             "paper_grid_correct": bool(ok), "tf_grid_correct": False})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_steps_are_paired_differences_to_the_rung_below_with_holm():
    n = 20
    solved = {f"{lad}:{m}": [0] * n for lad in bench_ladder.LADDERS for m in bench_ladder.RUNGS}
    solved["corrected:grid2d"] = [1] * 10 + [0] * 10  # +Grid2D solves 10 tasks Exp 0 does not
    solved["corrected:perminv"] = [1] * 5 + [0] * 15  # loses 5 of them
    res = bench_ladder.table(_per_query(solved, (307, 308)), 2000)  # p >= 1 / 2001: x 44 < 0.05
    acc = {(a["row"], a["model"]): a for a in res["acc"]}
    g = acc[("gravity", "corrected:grid2d")]["grid_correct"]
    assert g["mean"] == 0.5 and g["lo"] < 0.5 < g["hi"] and g["n"] == n
    pairs = {(p["a"], p["b"], p["row"], p["metric"]): p for p in res["pairs"]}
    step = pairs[("corrected:grid2d", "corrected:encoder_decoder", "gravity", "grid_correct")]
    assert step["diff"] == pytest.approx(0.5) and step["lo"] > 0 and step["p"] < 0.01
    assert step["p_holm"] >= step["p"] and step["p_holm"] < 0.05
    down = pairs[("corrected:perminv", "corrected:grid2d", "gravity", "grid_correct")]
    assert down["diff"] == pytest.approx(-0.25)
    cross = pairs[("as_run:grid2d", "corrected:grid2d", "all", "paper_grid_correct")]
    assert cross["diff"] == pytest.approx(-0.5) and cross["kind"] == "as run - corrected"
    # every step of both ladders and each middle rung across them: on gravity (generated) and
    # on all rows (three measurements): 2 x 4 x 4 + 3 x 4 comparisons, Holm over all of them
    assert len(res["pairs"]) == 2 * 4 * 4 + 3 * 4
    assert {r["row"] for r in res["acc"]} == {"gravity", "all"}  # groups without tasks: none
    nothing = pairs[("as_run:grid2d", "as_run:encoder_decoder", "gravity", "grid_correct")]
    assert nothing["diff"] == 0 and nothing["p"] == 1 and nothing["p_holm"] == 1


@pytest.mark.slow
def test_quick_run_writes_the_report(tmp_path):
    out = tmp_path / "LADDER.md"
    text = bench_ladder.run(["--quick", "--jobs", "1", "--work", str(tmp_path / "w"),
                             "--out", str(out)])  # fmt: skip
    assert out.read_text() == text
    for m in bench_ladder.RUNGS:
        assert f"| {m} |" in text
    assert "**not size-matched**" in text  # the tiny encoder-decoders are smaller than the champion
    assert "| colour_map (n=2) |" in text and "| view_reachable (n=2) |" in text
    assert "### The ladder as the paper's code ran it" in text
    assert "### The ladder corrected (real (row, col))" in text
    assert "Holm's correction across all 66 comparisons" in text
    # Exp 0 and the champion are the same in both ladders: trained once, shown twice
    assert (
        "| Exp 0, corrected | encoder_decoder | 6,127 (-22.2%) **not size-matched** | "
        "as_run-encoder_decoder |" in text
    )
    assert not (tmp_path / "w" / "corrected-champion").exists()
    again = bench_ladder.run(["--render", "--work", str(tmp_path / "w"), "--out", str(out)])
    assert again == text  # the report again from ladder.json, nothing retrained


def test_the_test_rows_are_the_trained_rules_and_their_conjugates():
    rows = bench_ladder.groups(("gravity", "colour_map"))
    assert rows == {"gravity": ("gravity",), "colour_map": ("colour_map",),
                    "view_reachable": ("gravity_up", "gravity_left", "gravity_right")}  # fmt: skip
    assert "view_reachable" not in bench_ladder.groups(("swap",))  # swap has no conjugate
