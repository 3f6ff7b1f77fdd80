"""evaluate() on real ARC-AGI-1 tasks with real models, and the whole evaluation chain."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MODELS

from arctax.data.collate import collate
from arctax.data.dataset import load_split
from arctax.evaluation.compare import compare
from arctax.evaluation.evaluate import COLUMNS, evaluate
from arctax.evaluation.submission import score
from arctax.io import file_sha256 as sha256
from arctax.settings import Settings, load_settings
from arctax.training.module import ARCLitModule
from tests.conftest import memorise, prepared

SMALL = {"data": {"max_tasks": 6, "max_cells": 64}}


def _cfg(**eval_over) -> Settings:
    ev = {"batch_size": 4, "max_new_tokens": 80, "attempts": 2, "bootstrap_samples": 200}
    return load_settings(overrides={**SMALL, "eval": {**ev, **eval_over}})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny prepared ARC-AGI-1 cache (6 tasks per split, grids of at most 64 cells)."""
    d = tmp_path_factory.mktemp("data")
    prepared(load_settings(overrides=SMALL), d)
    return d


def test_score():
    t = np.array([[1, 2], [3, 4]])
    assert score(t.copy(), t) == (True, True, 1.0)
    assert score(np.array([[1, 2], [3, 0]]), t) == (True, False, 0.75)
    assert score(np.array([[1, 2, 3]]), t) == (False, False, 0.0)
    assert score(None, t) == (False, False, 0.0)


@pytest.fixture(scope="module")
def memorised_ckpt(data_dir, tmp_path_factory):
    """An encoder-decoder that has memorised the test answers (so exact matches happen)."""
    torch.manual_seed(0)
    cfg = {"d_model": 64, "n_heads": 4, "n_encoder_layers": 1, "n_decoder_layers": 2,
           "d_ff": 128, "dropout": 0.0}  # fmt: skip
    module = ARCLitModule("encoder_decoder", cfg, {}, 2)
    ds = load_split(data_dir, "test")
    batch = collate([ds[i] for i in range(len(ds))], module.model.fmt, 2)
    memorise(module.model, batch, lr=3e-3)  # to a margin, on any CPU (see conftest.memorise)
    path = tmp_path_factory.mktemp("ckpt") / "memorised.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_exact_match_and_batch_invariance(data_dir, memorised_ckpt, tmp_path):
    df = evaluate(_cfg(), memorised_ckpt, data_dir, tmp_path / "b4", "memo", seed=5)
    n_queries = int((load_split(data_dir, "test").ex_aug == 0).sum())
    assert list(df.columns) == COLUMNS and len(df) == n_queries
    assert df["grid_correct_first"].sum() >= 1  # exact generated answers are counted
    # a teacher-forced perfect answer is what greedy decoding must generate
    assert (df["grid_correct_first"] | ~df["tf_grid_correct"]).all()
    assert (df["shape_correct"] | (df["cell_acc"] == 0)).all()
    assert (df["shape_correct"] | ~df["grid_correct"]).all()
    assert (df["grid_correct"] >= df["grid_correct_first"]).all()  # pass@2 never loses
    assert (df["gen_shape"][df["shape_correct"]] == df["target_shape"][df["shape_correct"]]).all()
    # answers must not depend on batch-mates (padding, masks, cache)
    one = evaluate(_cfg(batch_size=1), memorised_ckpt, data_dir, tmp_path / "b1", "memo", seed=5)
    pd.testing.assert_frame_equal(df, one, check_exact=False, atol=1e-6)
    on_disk = pd.read_csv(tmp_path / "b4" / "per_task.csv", dtype={"task_id": str})
    assert on_disk["grid_correct"].tolist() == df["grid_correct"].tolist()
    s = json.loads((tmp_path / "b4" / "summary.json").read_text())
    tasks = df.groupby("task_id")["grid_correct"].all()
    assert s["grid_acc"] == pytest.approx(tasks.mean()) and s["n_tasks"] == len(tasks)
    assert s["checkpoint_sha256"] == sha256(memorised_ckpt) and s["bootstrapped"] is False
    assert s["trained_here"] is False
    assert s["decode_tasks_per_s"] > 0 and s["attempts"] == 2 and s["seed"] == 5
    gallery = json.loads((tmp_path / "b4" / "predictions.json").read_text())
    assert {g["task_id"] for g in gallery} == set(sorted(tasks.index)[:4])
    assert all(len(g["answers"]) == 2 for g in gallery)


def test_bad_attempts_is_refused(data_dir, memorised_ckpt, tmp_path):
    cfg = _cfg()
    cfg = cfg.with_overrides({"eval": {"attempts": 3}})  # past the schema, as a notebook could
    with pytest.raises(ValueError, match=r"eval\.attempts"):
        evaluate(cfg, memorised_ckpt, data_dir, tmp_path, "x")


@pytest.mark.slow
def test_train_evaluate_compare_end_to_end(data_dir, tmp_path):
    from arctax.training.train import train

    cfg = load_settings(
        overrides={
            **SMALL,
            "trial69": {"max_epochs": 1, "batch_size": 8},
            "models": TINY_MODELS,
            "trainer": {"accelerator": "cpu", "num_workers": 0, "limit_train_batches": 2,
                        "limit_val_batches": 2},
            "eval": {"batch_size": 8, "max_new_tokens": 80, "attempts": 2,
                     "bootstrap_samples": 200},
        }
    )  # fmt: skip
    evals, trains = {}, []
    for name in TINY_MODELS:
        run = tmp_path / "train" / name
        train(cfg, name, 307, data_dir, run)
        df = evaluate(cfg, run / "best.ckpt", data_dir, tmp_path / "eval" / name, name, 307)
        assert set(df["model"]) == {name} and (df["seed"] == 307).all()
        evals[name], trains = tmp_path / "eval" / name, [*trains, run]
    res = compare(cfg.eval, evals, trains, tmp_path / "cmp", "champion")
    summary = pd.read_csv(tmp_path / "cmp" / "summary.csv")
    assert list(summary["model"]) == ["champion", "encoder_decoder", "decoder_only"]
    assert (summary["n_tasks"] == 6).all() and not res["bootstrapped_reference"]
    # trained here, every one of them; none is a bootstrapped stand-in reference
    assert summary["trained_here"].all() and not summary["bootstrapped"].any()
    md = (tmp_path / "cmp" / "summary.md").read_text()
    assert "trained by this workflow, not the original Trial 69 weights" in md
    audit = pd.read_csv(tmp_path / "cmp" / "audit.csv")
    assert audit["run"].nunique() == 3
    # overrides made here must show up as deviations with their reason
    lr = audit[(audit.key == "batch_size")]
    assert (lr["match"] == "DEVIATION").all() and lr["reason"].str.contains("batch_size").all()
    for f in res["files"]:
        assert (tmp_path / "cmp" / f).stat().st_size > 0


@pytest.mark.parametrize("name", ["champion", "encoder_decoder"])
def test_a_rambling_model_scores_zero_without_crashing(data_dir, tmp_path, name):
    """A model that never ends a row (emits colour 1 forever) runs past the 30-column limit.

    Evaluation must record malformed answers ("none"), not crash on out-of-range positions.
    """
    torch.manual_seed(0)
    module = ARCLitModule(name, TINY_MODELS[name], {}, 2)
    with torch.no_grad():
        module.model.head.weight.zero_()
        module.model.head.bias.zero_()
        module.model.head.bias[1] = 10.0
    path = tmp_path / "rambling.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    df = evaluate(_cfg(max_new_tokens=100, attempts=1), path, data_dir, tmp_path / "out", "r")
    assert (df["gen_shape"] == "none").all() and not df["grid_correct"].any()
    assert (df["cell_acc"] == 0).all()


def test_voting_over_views_keeps_the_plain_answer_in_pass_at_2(data_dir, memorised_ckpt, tmp_path):
    """With 4 views the identity view's answer is always among the two most voted (it is seen
    first, so it wins every tie, and 3 other views cannot outvote it twice)."""
    plain = evaluate(_cfg(attempts=1), memorised_ckpt, data_dir, tmp_path / "one", "m", seed=5)
    voted = evaluate(_cfg(attempts=2, views=4), memorised_ckpt, data_dir, tmp_path / "v", "m", 5)
    assert plain["grid_correct"].sum() >= 1
    assert (voted["grid_correct"] | ~plain["grid_correct"]).all()
    sub = json.loads((tmp_path / "v" / "submission.json").read_text())
    assert all(set(e) == {"attempt_1", "attempt_2"} for v in sub.values() for e in v)


def test_val_test_set_teacher_forced_per_example_is_a_hand_count(data_dir, tmp_path):
    """The val split as a test set (a copy of val.npz), scored from constructed logits: right
    on every token of a known set of examples, the FIRST CELL wrong on each of the others. Ours
    counts those grids wrong (the first cell is scored); the paper's measurement, which gives
    the first cell, counts them right: both per query, from the same pass."""
    from arctax.data.prepare_test import prepare_test_set
    from arctax.data.tokenize import VOCAB_SIZE
    from arctax.evaluation.evaluate import teacher_forced, write_evaluation
    from arctax.evaluation.stats import example_row

    cfg = load_settings(overrides={**SMALL, "data": {**SMALL["data"], "test_sets": {"v": "val"}}})
    out = tmp_path / "v"
    manifest = prepare_test_set(cfg.data, cfg.taxonomy, "v", out, data_dir)
    assert (out / "test.npz").read_bytes() == (data_dir / "val.npz").read_bytes()
    assert manifest["test_set"] == "v" and manifest["val_split"] and manifest["kind"] == "test"
    ds = load_split(out, "test")
    n, tasks = len(ds), ds.ex_task
    assert n > len(set(tasks.tolist())) > 1  # several examples per task: not a test split
    right = {i for i in range(n) if tasks[i] == 0} | {int(np.flatnonzero(tasks == 1)[0])}
    batch = collate([ds[i] for i in range(n)], "seq2seq", 2)
    labels = batch["labels"]
    logits = torch.nn.functional.one_hot(labels.clamp(min=0), VOCAB_SIZE).float()
    n_tokens = (labels != -100).sum(1)
    cells = ((labels >= 0) & (labels < 10)).sum(1) - 1  # the first cell is given, not scored
    for i in set(range(n)) - right:  # the first answer token's argmax is another token
        logits[i, 0, (labels[i, 0] + 1) % VOCAB_SIZE] = 2.0
    rows = teacher_forced(logits, labels, batch["tgt_in"])
    tf = dict(enumerate(rows))
    table = write_evaluation(cfg.eval, ds, {i: [None] for i in range(n)}, tmp_path / "e", "m", 1,
                             identity={}, tf=tf)  # fmt: skip
    summary = json.loads((tmp_path / "e/summary.json").read_text())
    hand_grid = len(right) / n
    hand_token = np.mean([1.0 if i in right else 1 - 1 / int(n_tokens[i]) for i in range(n)])
    hand_paper = np.mean([int(cells[i]) > 0 for i in range(n)])  # a 1x1 answer is never right
    assert summary["n_queries"] == n and summary["test_set"]["name"] == "v"
    assert summary["query_tf_grid_acc"] == pytest.approx(hand_grid)
    assert summary["query_tf_token_acc"] == pytest.approx(hand_token)
    assert summary["query_paper_grid_acc"] == pytest.approx(hand_paper)
    assert hand_paper > hand_grid  # the first cell wrong: their grid right, ours wrong
    assert summary["paper_cell_acc"] == 1.0  # every scored cell right: the first one is given
    assert table["paper_cells"].tolist() == [int(cells[i]) for i in _order(table, ds)]
    # per task (all examples right) only task 0 counts: a different number
    assert summary["tf_grid_acc"] == pytest.approx(1 / len(set(tasks.tolist())))
    row = example_row(table.assign(model="m"), "m", (200, 0.95, 0))
    assert row["ex_tf_grid_acc"] == pytest.approx(hand_grid) and row["n_examples"] == n
    assert row["ex_tf_grid_acc_lo"] <= hand_grid <= row["ex_tf_grid_acc_hi"]
    assert row["ex_paper_grid_acc"] == pytest.approx(hand_paper)
    assert row["ex_paper_cell_acc"] == 1.0


def _order(table, ds) -> list[int]:
    """Example index of each row of a per-query table (by task id and query)."""
    key = {(ds.meta(i)["task_id"], ds.meta(i)["pair"]): i for i in range(len(ds))}
    return [key[(t, q)] for t, q in zip(table["task_id"], table["query"], strict=True)]
