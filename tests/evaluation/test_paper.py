"""The paper's figures beside ours: the file's facts and checks, the inside/outside verdict,
the rows and the like-for-like note."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from arctax.evaluation.paper import (
    PAPER,
    PaperReferenceError,
    load_paper,
    paper_markdown,
    paper_rows,
    paper_set,
    verdict,
)


def test_the_papers_figures_as_reported():
    paper = load_paper()
    val = {(r["model"], r["metric"]): r["value"] for r in paper["val"]["rows"]}
    assert val == {
        ("decoder_only", "tf_grid"): 0.0055,
        ("encoder_decoder", "tf_grid"): 0.0232,
        ("grid2d", "tf_grid"): 0.0311,
        ("perminv", "tf_grid"): None,  # run, never reported
        ("champion", "tf_grid"): [0.0315, 0.0325],
        ("champion", "tf_cell"): 0.82,
    }
    assert (paper["val"]["tasks"], paper["val"]["examples"]) == (92, 13800)
    a2 = {(r["metric"], r["value"], r["seeds"]) for r in paper["arcagi2"]["rows"]}
    assert a2 == {("tf_grid", 0.0034, 5), ("tf_cell", 0.89, 5)}
    caveat = next(r["caveat"] for r in paper["val"]["rows"] if r["model"] == "decoder_only")
    assert "input tokens included" in caveat


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d["val"]["rows"][0].update(value=3.11), "val.rows[0].value"),
        (lambda d: d["val"]["rows"][1].update(value=[0.04, 0.03]), "val.rows[1].value"),
        (lambda d: d["val"]["rows"][0].update(metric="grid"), "val.rows[0].metric"),
        (lambda d: d["val"]["rows"][0].pop("caveat"), "val.rows[0]"),
        (lambda d: d["val"].pop("tasks"), "'val'"),
        (lambda d: d.update(arcagi1={}), "(top level)"),
    ],
)
def test_a_bad_entry_is_one_error_naming_the_file_and_key(tmp_path, edit, key):
    doc = yaml.safe_load(PAPER.read_text())
    edit(doc)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PaperReferenceError) as e:
        load_paper(path)
    assert str(path) in str(e.value) and key in str(e.value)


def test_which_test_sets_the_paper_reported():
    assert paper_set("val") == "val"
    assert paper_set("arcagi2") == paper_set("latest") == paper_set("ARCAGI2") == "arcagi2"
    assert paper_set("arcagi") is None and paper_set("held_out") is None
    assert paper_set("/data/arcagi2_tasks") is None and paper_set(None) is None


@pytest.mark.parametrize(
    ("figure", "expected"),
    [
        (0.03, "inside"),
        (0.02, "inside"),  # the bounds belong to the interval
        (0.0199, "outside (below ours)"),
        (0.0401, "outside (above ours)"),
        ([0.0315, 0.0325], "inside"),
        ([0.035, 0.045], "overlaps"),
        ([0.041, 0.05], "outside (above ours)"),
        (None, "n/a"),
    ],
)
def test_verdict_inside_or_outside_our_ci(figure, expected):
    assert verdict(figure, 0.02, 0.04) == expected
    assert verdict(0.03, math.nan, math.nan) == "n/a"


def _examples(**models: tuple[float, float, float]) -> pd.DataFrame:
    """example_row-like rows: the like-for-like grid accuracy (mean, lo, hi) per model; our own
    (stricter) measurement far below it, so a verdict read off the wrong column shows."""
    return pd.DataFrame([
        {"model": m, "ex_paper_grid_acc": v[0], "ex_paper_grid_acc_lo": v[1],
         "ex_paper_grid_acc_hi": v[2], "ex_paper_grid_acc_mdd": 0.011,
         "ex_paper_cell_acc": 0.8, "ex_paper_cell_acc_lo": 0.75, "ex_paper_cell_acc_hi": 0.85,
         "ex_tf_grid_acc": v[0] / 10, "ex_tf_grid_acc_lo": 0.0, "ex_tf_grid_acc_hi": v[0] / 5,
         "ex_tf_token_acc": 0.5, "ex_tf_token_acc_lo": 0.45, "ex_tf_token_acc_hi": 0.55,
         "n_seeds": 1, "n_tasks": 10, "n_examples": 1500, "ex_paper_grid_acc_seed_mean": v[0],
         "ex_paper_grid_acc_seed_std": math.nan}
        for m, v in models.items()
    ])  # fmt: skip


def test_paper_rows_mark_each_figure_against_our_ci():
    block = load_paper()["val"]
    ex = _examples(
        decoder_only=(0.001, 0.0, 0.004),  # 0.55% above our CI
        encoder_decoder=(0.02, 0.01, 0.03),  # 2.32% inside
        champion=(0.05, 0.04, 0.06),  # 3.15-3.25% below
        ref=(0.03, 0.028, 0.0318),  # 3.15-3.25% partly inside
    )
    rows = paper_rows(block, ex, {"champion": ["champion", "ref"]})
    got = {(r.ours, r.metric.split(",")[0]): r.verdict for r in rows.itertuples()}
    assert got == {
        ("decoder_only", "teacher-forced grid acc"): "outside (above ours)",
        ("encoder_decoder", "teacher-forced grid acc"): "inside",
        ("—", "teacher-forced grid acc"): "n/a (no such model here)",  # grid2d, perminv
        ("champion", "teacher-forced grid acc"): "outside (below ours)",
        ("ref", "teacher-forced grid acc"): "overlaps",
        ("champion", "teacher-forced cell acc"): "inside",  # 82% in 75-85%
        ("ref", "teacher-forced cell acc"): "inside",
    }
    enc = rows[rows["ours"] == "encoder_decoder"].iloc[0]
    assert (enc.ours_mean, enc.own_mean, enc.mdd) == (0.02, 0.002, 0.011)  # like for like first
    assert list(rows.loc[rows["ours"] == "—", "paper_model"]) == ["grid2d", "perminv"]
    # a study with a grid2d model gets its row
    with_grid2d = paper_rows(block, _examples(grid2d=(0.03, 0.025, 0.035)), {})
    assert with_grid2d.loc[with_grid2d["ours"] == "grid2d", "verdict"].tolist() == ["inside"]


def test_the_table_says_first_when_the_comparison_is_not_like_for_like():
    block = load_paper()["val"]
    rows = paper_rows(block, _examples(champion=(0.03, 0.02, 0.04)), {})
    audit = pd.DataFrame([
        {"run": "champion_s1", "key": "trainer.max_epochs", "expected": "100", "actual": "8",
         "match": "DEVIATION", "reason": "demo"},
        {"run": "champion_s1", "key": "optimizer.lr", "expected": "0.1", "actual": "0.1",
         "match": "match", "reason": ""},
    ])  # fmt: skip
    md = "\n".join(paper_markdown(block, rows, audit, ["Our test set has 10 tasks."], 0.95))
    head = md[: md.index("| paper rung")]
    assert "**Not like for like**" in head and "`trainer.max_epochs` (8 vs 100)" in head
    assert "optimizer.lr" not in head and "Our test set has 10 tasks." in head
    assert "ours, as the paper's code measured it [95% CI]" in md
    assert "inside (detectable: ±1.10 pts)" in md  # what the test set could detect, beside it
    assert "the paper's metric" not in md  # ours is not called theirs any more
    tail = md[md.index("What still differs") :]
    assert "moves ours **up**" in tail and "loss_over: sequence" in tail
    clean = "\n".join(paper_markdown(block, rows, audit.iloc[1:], [], 0.95))
    assert "Not like for like" not in clean and "Like for like" in clean
