"""The four ways to give the reference: resolved (and refused) before anything runs, and
every way scored by the same scorer (a model's own submission.json and the example adapter
reproduce that model's scores exactly)."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import torch
from conftest import evil_code, save_arctax_ckpt, save_evil_ckpt

from arctax.data.prepare import prepare
from arctax.evaluation.adapters import AdapterError
from arctax.evaluation.evaluate import evaluate
from arctax.evaluation.reference import (
    ReferenceError,
    evaluate_reference,
    resolve_reference,
)
from arctax.settings import Champion, load_settings

SMALL = {
    "data": {"max_tasks": 8, "max_cells": 64},
    "eval": {"batch_size": 3, "max_new_tokens": 60, "attempts": 2, "bootstrap_samples": 200},
}
SCORES = ["task_id", "query", "gen_shape", "shape_correct", "grid_correct",
          "grid_correct_first", "cell_acc"]  # fmt: skip


@pytest.fixture(scope="module")
def cfg():
    return load_settings(overrides=SMALL)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, cfg):
    d = tmp_path_factory.mktemp("data")
    prepare(cfg.data, cfg.taxonomy, d)
    return d


def _original(path):
    sd = {"cebr_alpha": torch.zeros(()), "core_model.bos_embed": torch.zeros(4)}
    torch.save({"state_dict": sd, "hyper_parameters": {"model": {"d_model": 160}}}, path)


def champion(**kw) -> Champion:
    """The default config's champion block with ``kw`` changed."""
    return load_settings().champion.replace(**kw)


def test_two_ways_at_once_name_both_keys(tmp_path):
    with pytest.raises(ReferenceError, match=r"'champion.bootstrap' and 'champion.predictions'"):
        resolve_reference(champion(bootstrap=True, predictions=str(tmp_path / "p.json")))
    with pytest.raises(ReferenceError, match=r"'champion.predictions' and 'champion.adapter'"):
        resolve_reference(champion(predictions="p.json", adapter="a:b"))


@pytest.mark.parametrize("stray", ["original", "empty", "text"])
def test_bootstrap_ignores_whatever_file_is_there(tmp_path, stray):
    path = tmp_path / "champion_bootstrap.ckpt"
    {"original": _original, "empty": lambda p: p.touch(), "text": lambda p: p.write_text("x")}[
        stray
    ](path)
    ref = resolve_reference(champion(checkpoint=str(path), bootstrap=True))
    assert ref.way == "bootstrap" and ref.path is None


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (None, "not found"),
        (lambda p: p.touch(), "empty"),
        (_original, "original internal codebase"),
        (lambda p: p.write_bytes(b"\x80 nope"), "corrupt"),
        (lambda p: torch.save(torch.zeros(2), p), "not an arctax checkpoint"),
    ],
)
def test_an_unusable_checkpoint_gives_the_ways_forward(tmp_path, make, fragment):
    path = tmp_path / "ref.ckpt"
    if make:
        make(path)
    with pytest.raises(ReferenceError) as e:
        resolve_reference(champion(checkpoint=str(path)))
    msg = str(e.value)
    assert f"'champion.checkpoint' points at '{path}'" in msg and fragment in msg
    for way in ("champion.predictions:", "champion.adapter:", "champion.bootstrap: true"):
        assert way in msg


def test_good_ways_resolve(tmp_path):
    ckpt = tmp_path / "m.ckpt"
    save_arctax_ckpt(ckpt, "champion")
    ref = resolve_reference(champion(checkpoint=str(ckpt)))
    assert (ref.way, ref.path) == ("checkpoint", str(ckpt)) and "champion" in ref.detail
    _original(tmp_path / "orig.ckpt")  # an adapter may load a file arctax cannot
    spec = "arctax.evaluation.adapters:arctax_checkpoint"
    ref = resolve_reference(champion(checkpoint=str(tmp_path / "orig.ckpt"), adapter=spec))
    assert ref.way == "adapter" and ref.adapter == spec


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no_colon", "expected 'package.module:Name'"),
        ("surely_not_a_module_xyz:load", "not importable"),
        ("missing/file.py:load", "file missing/file.py not found"),
    ],
)
def test_bad_adapters_are_refused_at_start(tmp_path, spec, fragment):
    ckpt = tmp_path / "m.ckpt"
    save_arctax_ckpt(ckpt)
    with pytest.raises(ReferenceError, match=fragment):
        resolve_reference(champion(checkpoint=str(ckpt), adapter=spec))
    good = "arctax.evaluation.adapters:arctax_checkpoint"
    with pytest.raises(ReferenceError, match="put the reference's weights there"):
        resolve_reference(champion(checkpoint=str(tmp_path / "none.ckpt"), adapter=good))


def test_bad_predictions_are_refused_at_start(tmp_path):
    p = tmp_path / "preds.json"
    p.write_text(json.dumps({"t": [{"attempt_1": [[1, 2], [3]]}]}))
    with pytest.raises(ReferenceError, match=r"champion.predictions.*task t test input 0"):
        resolve_reference(champion(predictions=str(p)))


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_predictions_that_never_end_are_refused_when_the_workflow_starts(tmp_path, kind):
    """champion.predictions is read at parse time (snakemake -n): a FIFO or a link to
    /dev/zero is refused at once, naming it (issue 36: it spun, or grew to MemoryError)."""
    import os
    import threading

    p = tmp_path / "preds.json"
    os.mkfifo(p) if kind == "fifo" else p.symlink_to("/dev/zero")
    got: dict = {}

    def run():
        try:
            resolve_reference(champion(predictions=str(p)))
        except ReferenceError as e:
            got["error"] = str(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "hung reading the predictions"
    word = "a named pipe (FIFO)" if kind == "fifo" else "a character device"
    assert got["error"].startswith(f"config key 'champion.predictions': {p}: {word}")


@pytest.fixture(scope="module")
def model_eval(cfg, data_dir, tmp_path_factory):
    """A tiny champion's checkpoint and its own evaluation (with its submission.json)."""
    root = tmp_path_factory.mktemp("model")
    ckpt = root / "champion.ckpt"
    save_arctax_ckpt(ckpt, "champion")
    table = evaluate(cfg, ckpt, data_dir, root / "eval", "champion", 307)
    return ckpt, root / "eval", table


def test_a_models_submission_as_predictions_reproduces_its_scores(
    cfg, data_dir, model_eval, tmp_path
):
    _, eval_dir, table = model_eval
    sub = eval_dir / "submission.json"
    ref = resolve_reference(champion(predictions=str(sub))).as_dict()
    again = evaluate_reference(cfg, ref, sub, data_dir, tmp_path / "ref", "champion_bootstrap")
    pd.testing.assert_frame_equal(table[SCORES], again[SCORES])
    assert again[["tf_token_acc", "paper_grid_correct"]].isna().all().all()  # nothing was run
    s = json.loads((tmp_path / "ref" / "summary.json").read_text())
    mine = json.loads((eval_dir / "summary.json").read_text())
    for key in ("grid_acc", "shape_acc", "cell_acc", "n_tasks", "n_queries"):
        assert s[key] == mine[key], key
    assert s["source"]["way"] == "predictions" and len(s["source"]["sha256"]) == 64
    assert s["tf_grid_acc"] is None and s["decode_tasks_per_s"] is None
    assert s["paper_cell_acc"] is None and s["query_paper_grid_acc"] is None
    assert (tmp_path / "ref" / "submission.json").read_text() == sub.read_text()


def test_the_example_adapter_equals_the_checkpoint_way(cfg, data_dir, model_eval, tmp_path):
    ckpt, _, _ = model_eval
    spec = "arctax.evaluation.adapters:arctax_checkpoint"
    via_ckpt = evaluate_reference(
        cfg, resolve_reference(champion(checkpoint=str(ckpt))).as_dict(), ckpt, data_dir,
        tmp_path / "c", "ref",
    )  # fmt: skip
    ref = resolve_reference(champion(checkpoint=str(ckpt), adapter=spec)).as_dict()
    via_adapter = evaluate_reference(cfg, ref, ckpt, data_dir, tmp_path / "a", "ref")
    pd.testing.assert_frame_equal(via_ckpt[SCORES], via_adapter[SCORES])
    assert (tmp_path / "a" / "submission.json").read_text() == (
        tmp_path / "c" / "submission.json"
    ).read_text()
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["source"]["adapter"] == spec and s["checkpoint_sha256"] == s["source"]["sha256"]


def test_an_adapter_that_breaks_the_protocol_is_named(cfg, data_dir, tmp_path, monkeypatch):
    mod = tmp_path / "my_adapter.py"
    mod.write_text(
        "def one_short(checkpoint, device, config):\n"
        "    return lambda queries: [[[[1]]]] * (len(queries) - 1)\n"
        "def bad_colour(checkpoint, device, config):\n"
        "    return lambda queries: [[[[42]]] for _ in queries]\n"
        "def no_answers(checkpoint, device, config):\n"
        "    return lambda queries: [None for _ in queries]\n"
    )
    ckpt = tmp_path / "weights.bin"
    ckpt.write_bytes(b"their own format")
    monkeypatch.chdir(tmp_path)
    for fn, fragment in [("one_short", "returned 2 answers for 3"), ("bad_colour", "colour 42")]:
        ref = {"way": "adapter", "adapter": f"my_adapter.py:{fn}", "detail": ""}
        with pytest.raises(AdapterError, match=fragment):
            evaluate_reference(cfg, ref, ckpt, data_dir, tmp_path / fn, "ref")
    ref = {"way": "adapter", "adapter": "my_adapter.py:no_answers", "detail": ""}
    table = evaluate_reference(cfg, ref, ckpt, data_dir, tmp_path / "none", "ref")
    assert not table["grid_correct"].any() and (table["gen_shape"] == "none").all()


@pytest.mark.parametrize("form", [0, 1])  # file form, module form
def test_a_reference_checkpoint_naming_code_is_refused_at_parse_and_in_the_job(
    cfg, tmp_path, monkeypatch, form
):
    from arctax.evaluation.checkpoints import CheckpointError

    monkeypatch.syspath_prepend(str(tmp_path))
    code = evil_code(tmp_path)
    ckpt = save_evil_ckpt(tmp_path / "evil.ckpt", code[form])
    with pytest.raises(ReferenceError) as e:  # what snakemake -n runs
        resolve_reference(champion(checkpoint=str(ckpt)), cfg.models)
    assert "'champion.checkpoint'" in str(e.value) and repr(code[form]) in str(e.value)
    assert "'models.mine.class" in str(e.value)
    way = {"way": "checkpoint", "path": str(ckpt), "adapter": None, "detail": "x"}
    with pytest.raises(CheckpointError, match="refused before importing"):  # the job's side
        evaluate_reference(cfg, way, ckpt, tmp_path / "data", tmp_path / "out", "ref")
    # the example adapter loads through the same door
    from arctax.evaluation.adapters import arctax_checkpoint

    with pytest.raises(CheckpointError, match="refused before importing"):
        arctax_checkpoint(str(ckpt), "cpu", cfg)
    assert not code[2].exists() and "evilpkg.payload" not in sys.modules
