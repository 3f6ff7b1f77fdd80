"""compare() and the figures on synthetic evaluation folders (fast, deterministic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_per_query

from arctax.evaluation import plots
from arctax.evaluation.compare import audit_table, compare
from arctax.settings import Eval, load_settings

CATS = {f"t{i:02d}": ("S1" if i < 12 else "C1") for i in range(20)}


def _cfg() -> Eval:
    return load_settings(overrides={"eval": {"bootstrap_samples": 500, "gallery_tasks": 2}}).eval


def write_eval(d: Path, label: str, seed: int, solved: set[str], bootstrapped=False) -> Path:
    """An evaluation folder as evaluate() writes it; t00 has two queries."""
    flags = {t: [t in solved] * (2 if t == "t00" else 1) for t in CATS}
    d.mkdir(parents=True)
    synthetic_per_query(label, seed, flags, CATS).to_csv(d / "per_task.csv", index=False)
    summary = {"label": label, "bootstrapped": bootstrapped, "decode_tasks_per_s": 12.5}
    (d / "summary.json").write_text(json.dumps(summary))
    preds = [
        {"task_id": "t00", "query": q, "category": "S1", "input": [[1, 2], [3, 4]],
         "target": [[4, 3], [2, 1]], "answers": [[[4, 3], [2, 1]] if "t00" in solved else None]}
        for q in range(2)
    ] + [{"task_id": "t01", "query": 0, "category": "S1", "input": [[0, 5, 5]],
          "target": [[5, 5, 0]], "answers": [[[5, 5, 0]] if "t01" in solved else [[1]]]}]  # fmt: skip
    (d / "predictions.json").write_text(json.dumps(preds))
    return d


def write_train(d: Path, model: str, seed: int, lightning_format: bool) -> Path:
    d.mkdir(parents=True)
    if lightning_format:  # CSVLogger: train and val on separate rows, NaN elsewhere
        df = pd.DataFrame({
            "epoch": [0, 0, 1, 1], "step": [9, 9, 19, 19],
            "train_loss_epoch": [2.0, np.nan, 1.5, np.nan], "val_loss": [np.nan, 2.2, np.nan, 1.9],
        })  # fmt: skip
    else:
        df = pd.DataFrame(
            {"epoch": [0, 1, 2], "train_loss": [2.1, 1.6, 1.2], "val_loss": [2.3, 2.0, 1.8]}
        )
    df.to_csv(d / "metrics.csv", index=False)
    audit = [
        {"key": "optimizer.lr", "expected": 0.00185, "actual": 0.00185, "match": True, "reason": ""},
        {"key": "precision", "expected": "16-mixed", "actual": "32-true", "match": False,
         "reason": "no CUDA: 16-mixed needs a GPU"},
    ]  # fmt: skip
    (d / "provenance.json").write_text(json.dumps({"model": model, "seed": seed, "audit": audit}))
    return d


@pytest.fixture
def setup(tmp_path):
    ref_solved = {f"t{i:02d}" for i in range(0, 10)}
    good = {f"t{i:02d}" for i in range(0, 20) if i != 3}  # solves 10 more, loses t03
    evals = {
        "champion": write_eval(tmp_path / "e/champion", "champion", 307, ref_solved, True),
        "decoder_only": [
            write_eval(tmp_path / "e/do1", "decoder_only", 1, good),
            write_eval(tmp_path / "e/do2", "decoder_only", 2, good - {"t10", "t11"}),
        ],
    }
    trains = [
        write_train(tmp_path / "t/champion", "champion", 307, True),
        write_train(tmp_path / "t/decoder_only", "decoder_only", 1, False),
    ]
    return evals, trains, tmp_path / "cmp"


def test_compare_numbers_files_and_report(setup):
    evals, trains, out = setup
    res = compare(_cfg(), evals, trains, out, "champion")
    s = pd.read_csv(out / "summary.csv").set_index("model")
    assert list(s.index) == ["champion", "decoder_only"]
    assert s.loc["champion", "grid_acc"] == pytest.approx(0.5)
    # decoder_only: 19/20 with seed 1, 17/20 with seed 2 -> per-task mean 0.9
    assert s.loc["decoder_only", "grid_acc"] == pytest.approx(0.9)
    assert s.loc["decoder_only", "n_seeds"] == 2
    assert s.loc["decoder_only", "grid_acc_seed_std"] == pytest.approx(np.std([0.95, 0.85], ddof=1))
    assert s.loc["decoder_only", "diff_vs_ref"] == pytest.approx(0.4)
    assert s.loc["decoder_only", "diff_lo"] > 0
    # per-task majority (>= half the seeds): model alone solves t10..t19 (10), ref alone t03 (1)
    assert (s.loc["decoder_only", "mcnemar_b"], s.loc["decoder_only", "mcnemar_c"]) == (10, 1)
    assert s.loc["decoder_only", "mcnemar_p"] == pytest.approx(2 * 12 / 2**11)
    assert s.loc["champion", "grid_acc_lo"] <= 0.5 <= s.loc["champion", "grid_acc_hi"]
    cat = pd.read_csv(out / "per_category.csv")
    assert set(cat["category"]) == {"S1", "C1"}
    c1 = cat[(cat.category == "C1") & (cat.model == "champion")].iloc[0]
    assert c1["grid_acc"] == 0.0 and c1["n_tasks"] == 8
    audit = pd.read_csv(out / "audit.csv")
    assert set(audit["run"]) == {"champion_s307", "decoder_only_s1"}
    assert (audit["match"] == "DEVIATION").sum() == 2
    md = (out / "summary.md").read_text()
    assert "bootstrapped here, not the original Trial 69 weights" in md
    assert "Teacher-forced" in md and "not** generated answers" in md
    assert "| decoder_only |" in md and "no CUDA" in md
    assert "adaptation.md" not in md
    for f in res["files"]:
        assert (out / f).stat().st_size > 0
    assert res["bootstrapped_reference"] is True
    # deterministic: a second run gives byte-identical tables
    first = (out / "summary.csv").read_text()
    compare(_cfg(), evals, trains, out, "champion")
    assert (out / "summary.csv").read_text() == first
    compare(_cfg(), evals, trains, out, "champion", adaptation=True)  # points at its table
    assert "**`adaptation.md`**" in (out / "summary.md").read_text()


def test_compare_refuses_bad_inputs(setup, tmp_path):
    evals, trains, out = setup
    with pytest.raises(ValueError, match="reference 'ref' is not among"):
        compare(_cfg(), evals, trains, out, "ref")
    short = tmp_path / "e/short"
    write_eval(short, "x", 1, set())
    df = pd.read_csv(short / "per_task.csv")
    df[df.task_id != "t05"].to_csv(short / "per_task.csv", index=False)
    with pytest.raises(ValueError, match="'x' was evaluated on 19 tasks"):
        compare(_cfg(), {**evals, "x": short}, trains, out, "champion")
    with pytest.raises(FileNotFoundError, match=r"nowhere/per_task\.csv"):
        compare(_cfg(), {**evals, "x": tmp_path / "nowhere"}, trains, out, "champion")
    with pytest.raises(FileNotFoundError, match=r"provenance\.json"):
        compare(_cfg(), evals, [tmp_path / "none"], out, "champion")


def test_audit_keeps_runs_with_the_same_model_and_seed_apart(setup):
    _, trains, _ = setup
    audit = audit_table([trains[0], trains[0]])
    assert audit["run"].nunique() == 2 and len(audit) == 4


def test_read_metrics_merges_lightning_rows(setup):
    _, trains, _ = setup
    m = plots.read_metrics(trains[0] / "metrics.csv")
    assert m.to_dict("list") == {"epoch": [0, 1], "train_loss": [2.0, 1.5], "val_loss": [2.2, 1.9]}


def test_gallery_draws_malformed_answers(tmp_path):
    items = [{"task_id": "a", "query": 0, "input": [[1, 2]], "target": [[2, 1]]}]
    p = plots.plot_gallery(items, {"m1": [[[2, 1]]], "m2": [None]}, tmp_path / "g.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.ARC_PALETTE[9] == "#870C25" and len(plots.ARC_PALETTE) == 10


def test_summary_says_how_the_reference_was_trained_and_what_the_test_set_left_out(setup):
    evals, trains, out = setup
    ref = Path(evals["champion"]) / "summary.json"
    s = json.loads(ref.read_text())
    s.update(bootstrapped=False, trained_here=True,
             test_left_out={"n_tasks": 2, "reasons": {"a test input over data.max_cells": 2}})  # fmt: skip
    ref.write_text(json.dumps(s))
    res = compare(_cfg(), evals, trains, out, "champion")
    md = (out / "summary.md").read_text()
    assert "trained by this workflow, not the original Trial 69 weights" in md
    assert "bootstrapped here" not in md and res["bootstrapped_reference"] is False
    assert "Test set: 20 tasks; **2 task(s) of the test source left out whole**" in md


def test_on_the_val_split_the_papers_figures_stand_beside_ours(setup):
    evals, trains, out = setup
    compare(_cfg(), evals, trains, out, "champion")
    md = (out / "summary.md").read_text()
    assert "## Per example (the paper's unit)" in md and "Against the paper" not in md
    res = compare(_cfg(), evals, trains, out, "champion", test_source="val")
    doc = json.loads((out / "summary.json").read_text(), parse_constant=pytest.fail)  # no NaN
    assert doc == json.loads(json.dumps(doc)) and doc["paper"]["set"] == "val"
    ex = {r["model"]: r for r in doc["per_example"]}
    # champion solves t00 (2 queries) .. t09: 11 of 21 queries, per example (10 of 20 per task)
    assert ex["champion"]["ex_tf_grid_acc"] == pytest.approx(11 / 21)
    assert ex["champion"]["ex_grid_acc"] == pytest.approx(11 / 21)
    assert ex["decoder_only"]["n_seeds"] == 2 and len(ex["decoder_only"]["per_seed"]) == 2
    rows = {(r["ours"], r["metric"].split(",")[0]): r["verdict"] for r in res["paper"]["rows"]}
    assert rows[("champion", "teacher-forced grid acc")] == "outside (below ours)"
    assert rows[("decoder_only", "teacher-forced grid acc")] == "outside (below ours)"
    assert rows[("—", "teacher-forced grid acc")] == "n/a (no such model here)"
    assert len(res["paper"]["rows"]) == 6  # the reference is `champion` here: once, not twice
    md = (out / "summary.md").read_text()
    section = md[md.index("## Against the paper") :]
    assert section.index("**Not like for like**") < section.index("| paper rung")
    assert '`precision` ("32-true" vs "16-mixed")' in section
    assert "grid acc, as the paper's code measured it [95% CI]" in md  # beside ours
    assert "grid acc, ours (shape, markers and first cell scored: stricter) [95% CI]" in md
    assert "the paper's metric" not in md  # ours is not called theirs
    # the paired rung table: decoder_only and champion are the ladder's rungs present here
    paired = md[md.index("## Paired differences") : md.index("## Against the paper")]
    assert "Holm's correction across the 3 comparisons" in paired
    gen = [r for r in doc["paired"] if r["metric"] == "generated grid acc"]
    assert [(r["a"], r["b"]) for r in gen] == [("champion", "decoder_only")]
    assert gen[0]["diff"] == pytest.approx((11 - (20 + 18) / 2) / 21)  # seeds averaged per query
    assert gen[0]["lo"] < gen[0]["diff"] < gen[0]["hi"] < 0 and gen[0]["p_holm"] >= gen[0]["p"]
    assert (
        "| champion − decoder_only (ladder, skipping encoder_decoder, grid2d, perminv) |" in paired
    )
    assert (out / "paired.csv").is_file()
    seeds = md[md.index("Each seed on its own:") : md.index("## Against the paper")]
    assert "| decoder_only | 1 |" in seeds and "| decoder_only | 2 |" in seeds
    assert "| champion |" not in seeds  # one seed: no table of its own
    assert "stand-in trained here" in section and "21 examples" in section
    a2 = compare(_cfg(), evals, trains, out, "champion", test_source="arcagi2")["paper"]
    assert a2["set"] == "arcagi2" and {r["paper"] for r in a2["rows"]} == {0.0034, 0.89}


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"[" * 10**5 + b"]" * 10**5, "nested deeper than 32"), (b"[1, 2]", "not a JSON object")],
)
def test_a_hostile_provenance_json_is_one_line_naming_it(tmp_path, content, says):
    """provenance.json nested 100k deep was a RecursionError traceback (issue 36)."""
    (tmp_path / "provenance.json").write_bytes(content)
    with pytest.raises(FileNotFoundError) as e:
        audit_table([tmp_path])
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "provenance.json")) and says in msg and "\n" not in msg
