"""Safe checkpoint loading: every bad file is built here and refused with one clear error."""

from __future__ import annotations

import re
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import SHARED_ORIGINAL, TINY_MODELS, save_arctax_ckpt

from arctax.config import load_config
from arctax.evaluation.checkpoints import CheckpointError, load_checkpoint, load_model

CFG = load_config()  # the built-ins; no class of anyone's own


def refused(path: Path, *patterns: str) -> str:
    """Assert ``load_model`` raises CheckpointError naming ``path`` and matching ``patterns``."""
    with pytest.raises(CheckpointError) as e:
        load_model(path, CFG)
    msg = str(e.value)
    assert str(path) in msg
    for p in patterns:
        assert re.search(p, msg, re.IGNORECASE), f"{p!r} not in: {msg}"
    return msg


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_arctax_checkpoint_round_trips(tmp_path, name):
    path = tmp_path / f"{name}.ckpt"
    model = save_arctax_ckpt(path, name)
    loaded, info = load_model(path, CFG)
    assert type(loaded) is type(model) and not loaded.training
    for (k, v), (k2, v2) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    assert info["model_name"] == name and info["k"] == 2 and len(info["sha256"]) == 64
    assert info["trained_here"] is False  # no provenance.json beside it: not trained here
    (tmp_path / "provenance.json").write_text('{"model": "x", "seed": 1}')
    assert load_model(path, CFG)[1]["trained_here"] is True
    assert "bootstrapped" not in info  # only a reference can be bootstrapped (evaluate says)


def test_missing_empty_and_directory(tmp_path):
    refused(tmp_path / "nope.ckpt", "not found")
    (tmp_path / "empty.ckpt").touch()
    refused(tmp_path / "empty.ckpt", "empty")
    refused(tmp_path, "not a file")


def test_truncated(tmp_path):
    good = tmp_path / "good.ckpt"
    save_arctax_ckpt(good)
    bad = tmp_path / "trunc.ckpt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    refused(bad, "truncated")


def test_text_file_and_foreign_zip(tmp_path):
    txt = tmp_path / "notes.ckpt"
    txt.write_text("epoch: 3\nthis is not a checkpoint\n")
    refused(txt, "not a PyTorch checkpoint")
    z = tmp_path / "archive.ckpt"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("readme.txt", "hello")
    refused(z, "zip archive but not a PyTorch checkpoint", "readme.txt")


def test_plain_tensor_and_dict_without_state_dict(tmp_path):
    t = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), t)
    refused(t, "holds a Tensor")
    d = tmp_path / "dict.pt"
    torch.save({"weights": torch.zeros(3)}, d)
    refused(d, "no 'state_dict'", "weights")


def test_checkpoint_without_arctax_hparams(tmp_path):
    p = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(2)}, "hyper_parameters": {"lr": 1.0}}, p)
    refused(p, "lack model_name", "found: lr")


def test_architecture_mismatch_shows_key_diff(tmp_path):
    p = tmp_path / "mismatch.ckpt"
    save_arctax_ckpt(p)
    ckpt = torch.load(p, weights_only=True)
    sd = ckpt["state_dict"]
    dropped = sorted(sd)[0]
    del sd[dropped]
    sd["model.extra.weight"] = torch.zeros(2)
    ckpt["hyper_parameters"]["model_cfg"] = {**TINY_MODELS["encoder_decoder"], "d_ff": 48}
    torch.save(ckpt, p)
    msg = refused(
        p, "do not fit the encoder_decoder", r"missing \d+", r"unexpected 1", r"shape \d+"
    )
    assert dropped.removeprefix("model.") in msg and "extra.weight" in msg
    assert "(+" in msg  # long lists are cut to the first few


def _original_like(hparams) -> dict:
    """The original internal codebase's top-level structure with a few real key names/shapes."""
    sd = {
        "cebr_alpha": torch.zeros(()),
        "gauge_alpha": torch.zeros(()),
        "core_model.bos_embed": torch.zeros(160),
        "core_model.context_encoder.attn_proj.weight": torch.zeros(1, 32),
        "model.positional_encoding.pe": torch.zeros(1, 900, 160),
    }
    return {
        "epoch": 3, "global_step": 6000, "pytorch-lightning_version": "2.5.3", "state_dict": sd,
        "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [],
        "MixedPrecision": {}, "hparams_name": None, "hyper_parameters": hparams,
    }  # fmt: skip


def test_original_codebase_with_plain_hparams(tmp_path):
    p = tmp_path / "champion_bootstrap.ckpt"
    torch.save(_original_like({"model": {"d_model": 160}}), p)
    refused(p, "original internal codebase", "core_model", "bootstrap: true", "convert")
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_original_codebase_with_omegaconf_hparams(tmp_path, monkeypatch):
    # a stand-in class living in a module named like OmegaConf's, pickled as OmegaConf would be
    mod = types.ModuleType("omegaconf.dictconfig")

    class DictConfig(dict):
        pass

    DictConfig.__module__, DictConfig.__qualname__ = mod.__name__, "DictConfig"
    mod.DictConfig = DictConfig
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", mod)
    p = tmp_path / "omega.ckpt"
    torch.save(_original_like(DictConfig(model={"d_model": 160})), p)
    refused(p, "OmegaConf", "weights_only=True", "original internal codebase")


def test_custom_class_in_checkpoint(tmp_path):
    p = tmp_path / "custom.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _Custom()}, p)
    refused(p, "code execution", "_Custom")


class _Custom:
    """A pickled object that is not a plain type."""


@pytest.mark.shared
def test_original_codebase_from_shared_key_map(tmp_path):
    keys = SHARED_ORIGINAL / "champion_bootstrap_checkpoint_keys.txt"
    if not keys.is_file():
        pytest.skip(f"{keys} absent")
    text = keys.read_text()
    sd = {}
    for name, shape in re.findall(r"^\s+- (\S+)\n\s+Shape: \(([\d, ]*)\)", text, re.M):
        sd[name] = torch.zeros(tuple(int(s) for s in shape.replace(" ", "").split(",") if s))
    assert len(sd) == 292
    ckpt = _original_like({"model": {"d_model": 160}})
    ckpt["state_dict"] = sd
    p = tmp_path / "champion_bootstrap.ckpt"
    torch.save(ckpt, p)
    refused(p, "original internal codebase")
