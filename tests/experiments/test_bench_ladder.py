"""The ladder benchmark runs end to end on tiny sizes (so it cannot rot) and its table's
intervals and paired steps are what they claim."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "experiments"), str(REPO / "benchmarks")]

import bench_ladder  # noqa: E402


def _per_query(solved: dict[str, list[int]]) -> pd.DataFrame:
    """Per-query rows: ``solved[model][i]`` for task i of group gravity (one query each)."""
    rows = []
    for model, flags in solved.items():
        for i, ok in enumerate(flags):
            rows.append({"model": model, "seed": 307, "task_id": f"t{i}", "category": "gravity",
                         "grid_correct": bool(ok), "shape_correct": True, "cell_acc": 1.0,
                         "tf_grid_correct": bool(ok), "tf_cell_acc": 1.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_table_steps_are_paired_differences_to_the_rung_below():
    n = 20
    solved = {m: [0] * n for m in bench_ladder.RUNGS}
    solved["grid2d"] = [1] * 10 + [0] * 10  # +Grid2D solves 10 tasks Exp 0 does not
    solved["perminv"] = [1] * 5 + [0] * 15  # loses 5 of them
    rows = bench_ladder.table(_per_query(solved), 500)
    got = {r["model"]: r for r in rows if r["group"] == "gravity"}
    assert got["grid2d"]["acc"] == 0.5 and got["grid2d"]["lo"] < 0.5 < got["grid2d"]["hi"]
    assert (got["grid2d"]["b"], got["grid2d"]["c"]) == (10, 0) and got["grid2d"]["p"] < 0.01
    assert got["grid2d"]["step"] == pytest.approx(0.5)
    assert (got["perminv"]["b"], got["perminv"]["c"]) == (0, 5)
    assert got["perminv"]["step"] == pytest.approx(-0.25)
    assert "step" not in got["decoder_only"]  # the first rung has none below it
    assert {r["group"] for r in rows} == {"gravity", "all"}  # groups without tasks: no rows


@pytest.mark.slow
def test_quick_run_writes_the_report(tmp_path):
    out = tmp_path / "LADDER.md"
    text = bench_ladder.run(["--quick", "--controls", "--jobs", "1", "--work",
                             str(tmp_path / "w"), "--out", str(out)])  # fmt: skip
    assert out.read_text() == text
    for m in bench_ladder.RUNGS:
        assert f"| {m} |" in text
    assert "**not size-matched**" in text  # the tiny encoder-decoders are smaller than the champion
    assert "| colour_map (n=2) |" in text and "| view_reachable (n=2) |" in text
    assert "Control `grid2d_unscaled`" in text and "grid2d_unscaled - perminv" in text
    again = bench_ladder.run(["--render", "--work", str(tmp_path / "w"), "--out", str(out)])
    assert again == text  # the report again from ladder.json, nothing retrained


def test_the_test_rows_are_the_trained_rules_and_their_conjugates():
    rows = bench_ladder.groups(("gravity", "colour_map"))
    assert rows == {"gravity": ("gravity",), "colour_map": ("colour_map",),
                    "view_reachable": ("gravity_up", "gravity_left", "gravity_right")}  # fmt: skip
    assert "view_reachable" not in bench_ladder.groups(("swap",))  # swap has no conjugate
