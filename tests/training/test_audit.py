"""The audit's data and model rows: Trial 69's data and the paper's sizes live in one place
(config/trial69_reference.yaml), and every deviation of a run from them has its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arctax.data.splits import task_list_sha256
from arctax.models import build_model, count_parameters
from arctax.settings import load_settings
from arctax.training.audit import REFERENCE, data_audit, model_audit, reference
from tests.conftest import REPO

MODELS = ("champion", "encoder_decoder", "decoder_only")


def test_the_reference_holds_trial69s_data_and_the_papers_sizes():
    ref = reference()
    assert REFERENCE.name == "trial69_reference.yaml" and REFERENCE.parent.name == "config"
    d = ref["data"]
    assert d["source_kind"] == "re-arc" and d["examples_per_task"] == 150
    assert d["tasks"] == {"train": 308, "val": 92}
    assert d["examples"] == {"train": 46200, "val": 13800}
    assert d["examples"]["train"] == 308 * 150 and d["augment_copies"] == 0
    assert {m: ref["models"][m]["parameters"] for m in MODELS} == {
        "champion": 1724619, "encoder_decoder": 1708907, "decoder_only": 1735612,
    }  # fmt: skip
    assert ref["models"]["champion"]["sizes"] == {
        "d_model": 160, "n_heads": 4, "n_encoder_layers": 1, "n_decoder_layers": 3, "d_ff": 640,
        "context.d_model": 32, "context.n_heads": 8,
    }  # fmt: skip
    assert ref["models"]["decoder_only"]["sizes"] == {"d_model": 164, "n_layers": 4, "d_ff": 656}


def _rows(cfg, name):
    n = count_parameters(build_model(name, cfg.models[name].config()))
    return {r["key"]: r for r in model_audit(cfg.models[name], cfg.preset, n)}, n


def test_full_size_models_against_the_papers_counts_with_reasons():
    cfg = load_settings()
    pcts = {}
    for name in MODELS:
        rows, n = _rows(cfg, name)
        p = rows[f"models.{name}.parameters"]
        pcts[name] = round(100 * (n - p["expected"]) / p["expected"], 1)
        assert p["actual"] == n and not p["match"] and p["reason"].startswith(f"{pcts[name]:+.1f}%")
        assert all(r["reason"] and "UNEXPLAINED" not in r["reason"] for r in rows.values()
                   if not r["match"])  # fmt: skip
    assert pcts == {"champion": -3.5, "encoder_decoder": 0.1, "decoder_only": -1.6}
    champ, _ = _rows(cfg, "champion")
    assert all(r["match"] for k, r in champ.items() if not k.endswith("parameters"))
    dec, _ = _rows(cfg, "decoder_only")
    assert not dec["models.decoder_only.d_model"]["match"]  # 168, re-matched: it says why
    assert "cross-attention" in dec["models.decoder_only.d_model"]["reason"]


def test_the_demos_audit_lists_its_size_and_data_deviations(tiny_data):
    import json

    cfg = load_settings("config/demo.yaml")
    rows, _ = _rows(cfg, "champion")
    assert rows["models.champion.d_model"]["reason"] == (
        "config override: models.champion.d_model = 64 (demo preset)"
    )
    assert "(demo preset)" in rows["models.champion.parameters"]["reason"]
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    data = {r["key"]: r for r in data_audit(cfg.data, cfg.preset, manifest)}
    assert data["data.source_kind"]["reason"].startswith(
        "data.source arcagi: ARC-AGI-1 demonstrations"
    )
    assert data["data.max_cells"]["reason"] == "config override: data.max_cells = 100 (demo preset)"
    assert data["data.augment.copies"]["reason"].endswith("(demo preset)")
    assert data["data.examples_per_task"]["reason"] == "null: every pair of each task"
    for key in ("data.tasks.train", "data.examples.train"):
        assert not data[key]["match"] and data[key]["reason"], key


SPLIT = REPO / ".." / "shared" / "data" / "original" / "split_manifest.json"


def _rearc_manifest(train: list[str], val: list[str]) -> dict:
    """A training manifest of a faithful re-arc run on these splits."""
    return {
        "source": "re-arc:/data/re_arc", "source_kind": "re-arc", "version": "re-arc@e5b7f1d",
        "inputs_sha256": "0" * 64, "held_out_fraction": 0.0, "held_out": [],
        "source_task_ids": sorted(train + val), "splits": {"train": train, "val": val},
        "counts": {"train": {"tasks": len(train), "examples": 150 * len(train)},
                   "val": {"tasks": len(val), "examples": 150 * len(val)}},
    }  # fmt: skip


@pytest.mark.shared
@pytest.mark.skipif(not SPLIT.is_file(), reason=f"{SPLIT} absent")
@pytest.mark.parametrize("split_manifest", [True, False])
def test_a_faithful_rearc_run_matches_trial69s_data(split_manifest):
    """The original split's 308 / 92 tasks: every data row matches, the val task list's sha256
    included; a seeded split of another 92 is not the paper's."""
    orig = json.loads(SPLIT.read_text())
    train, val = ([Path(f).stem for f in orig[k]] for k in ("train_files", "val_files"))
    cfg = load_settings(overrides={"data": {"examples_per_task": 150,
                                          "manifest": str(SPLIT) if split_manifest else None}})  # fmt: skip
    m = _rearc_manifest(train, val)
    rows = data_audit(cfg.data, cfg.preset, m)
    assert [r["key"] for r in rows if r["match"] is False] == []
    assert {r["key"] for r in rows if r["match"] is None} == {
        "data.source", "data.version", "data.inputs_sha256"}  # fmt: skip
    assert reference()["data"]["val_tasks_sha256"] == task_list_sha256(val)  # the fact itself
    m = _rearc_manifest(train[2:] + val[:2], train[:2] + val[2:])  # another 92: two swapped
    m["counts"]["val"] = {"tasks": 90, "examples": 13500}  # a seeded split of 400 is not 308/92
    why = {r["key"]: r for r in data_audit(cfg.data, cfg.preset, m)}
    assert why["data.val_tasks_sha256"]["match"] is False
    if not split_manifest:
        assert "not the original split_manifest.json" in why["data.tasks.val"]["reason"]
        assert why["data.val_tasks_sha256"]["reason"].startswith("not the paper's 92 tasks")
    else:
        reason = why["data.val_tasks_sha256"]["reason"]
        assert "the original split_manifest.json's val tasks" in reason
        assert "2 of its 92 val tasks are not in the prepared val split" in reason


def test_a_val_split_of_other_tasks_is_a_deviation_with_or_without_a_manifest(tmp_path):
    """92 tasks that are not the paper's: without data.manifest the audit says so; with a
    manifest of its own, that the manifest is not the original's."""
    ids = [f"{i:08x}" for i in range(400)]
    m = _rearc_manifest(ids[:308], ids[308:])
    cfg = load_settings(overrides={"data": {"examples_per_task": 150}})
    row = {r["key"]: r for r in data_audit(cfg.data, cfg.preset, m)}["data.val_tasks_sha256"]
    assert row["match"] is False and row["actual"] == task_list_sha256(ids[308:])
    assert row["reason"].startswith("not the paper's 92 tasks: no data.manifest given")
    man = tmp_path / "split.json"
    man.write_text(json.dumps({"train_files": [f"{t}.json" for t in ids[:308]],
                               "val_files": [f"{t}.json" for t in ids[308:]]}))  # fmt: skip
    cfg = load_settings(overrides={"data": {"examples_per_task": 150, "manifest": str(man)}})
    row = {r["key"]: r for r in data_audit(cfg.data, cfg.preset, m)}["data.val_tasks_sha256"]
    assert row["match"] is False
    assert row["reason"] == (
        f"data.manifest {man}: not the original split_manifest.json (its val tasks differ)"
    )
    assert task_list_sha256(ids[308:]) == task_list_sha256(list(reversed(ids[308:])))


def test_the_rung_options_are_audited_against_the_papers_rungs_as_run():
    """As run (config/ladder_as_run.yaml) every option matches the paper's rung; the corrected
    grid2d says why its positions differ; arctax's own encoder_decoder names its reasons."""
    from arctax.config import DEFAULT_CONFIG
    from arctax.models import rung_options

    def rows(cfg, name):
        opts = rung_options(name, cfg.models[name].config(), cfg.models[name].cls)
        return {r["key"]: r for r in model_audit(cfg.models[name], cfg.preset, 1_708_907, opts)}

    as_run = load_settings(DEFAULT_CONFIG, REPO / "config" / "ladder_as_run.yaml")
    for name in ("encoder_decoder", "grid2d", "perminv", "decoder_only"):
        got = rows(as_run, name)
        opts = {k: r for k, r in got.items() if not k.endswith(("parameters", "d_model",
                "n_layers", "d_ff", "n_encoder_layers", "n_decoder_layers"))}  # fmt: skip
        assert opts and all(r["match"] for r in opts.values() if r["match"] is not None), opts
        assert {r["key"] for r in opts.values() if r["match"] is None} <= {
            "models.decoder_only.dropout"}  # fmt: skip
    assert rows(as_run, "grid2d")["models.grid2d.positions"]["actual"] == "grid2d_flat"
    corrected = load_settings(DEFAULT_CONFIG, REPO / "config" / "ladder.yaml")
    pos = rows(corrected, "grid2d")["models.grid2d.positions"]
    assert (pos["expected"], pos["actual"], pos["match"]) == ("grid2d_flat", "grid2d", False)
    assert pos["reason"].startswith("bug 3 of the original fixed on purpose")
    own = rows(load_settings(), "encoder_decoder")
    for key, value in (("init", "torch"), ("embed_scale", False), ("dropout", 0.1)):
        r = own[f"models.encoder_decoder.{key}"]
        assert r["actual"] == value and r["match"] is False
        assert "arctax's own Exp 0" in r["reason"] or "config override" in r["reason"], r
    assert not own["models.encoder_decoder.positions"]["reason"]  # 1d: theirs too
    dec = rows(load_settings(), "decoder_only")["models.decoder_only.loss_over"]
    assert (dec["actual"], dec["match"]) == ("output", False) and "whole" in dec["reason"]
