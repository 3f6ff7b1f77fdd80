"""Safe checkpoint loading: every bad file is built here and refused with one clear error."""

from __future__ import annotations

import json
import re
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO, SHARED_ORIGINAL, TINY_MODELS, evil_code, save_arctax_ckpt, save_evil_ckpt

from arctax.evaluation.checkpoints import CheckpointError, load_checkpoint, load_model
from arctax.models import build_model
from arctax.plugins import source_sha256
from arctax.settings import Settings, load_settings
from tests.models.own_models import write as write_own

CFG = load_settings()  # the built-ins; no class of anyone's own


def refused(path: Path, *patterns: str, cfg: Settings = CFG) -> str:
    """Assert ``load_model`` raises CheckpointError naming ``path`` and matching ``patterns``."""
    with pytest.raises(CheckpointError) as e:
        load_model(path, cfg.models, cfg.limits)
    msg = str(e.value)
    assert str(path) in msg
    for p in patterns:
        assert re.search(p, msg, re.IGNORECASE), f"{p!r} not in: {msg}"
    return msg


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_arctax_checkpoint_round_trips(tmp_path, name):
    path = tmp_path / f"{name}.ckpt"
    model = save_arctax_ckpt(path, name)
    loaded, info = load_model(path, CFG.models, CFG.limits)
    assert type(loaded) is type(model) and not loaded.training
    for (k, v), (k2, v2) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    assert info["model_name"] == name and info["k"] == 2 and len(info["sha256"]) == 64
    assert info["trained_here"] is False  # no provenance.json beside it: not trained here
    # a provenance.json of any content is no proof (issue 36); one recording THIS file's bytes is
    (tmp_path / "provenance.json").write_text('{"model": "x", "seed": 1}')
    assert load_model(path, CFG.models, CFG.limits)[1]["trained_here"] is False
    record = {"model": name, "checkpoints_sha256": {path.name: "0" * 64}}
    (tmp_path / "provenance.json").write_text(json.dumps(record))
    assert (
        load_model(path, CFG.models, CFG.limits)[1]["trained_here"] is False
    )  # another file's bytes
    record["checkpoints_sha256"][path.name] = info["sha256"]
    (tmp_path / "provenance.json").write_text(json.dumps(record))
    assert load_model(path, CFG.models, CFG.limits)[1]["trained_here"] is True
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


# ---- the config, never the checkpoint, chooses the code that runs ------------------------


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """(file form, module form, marker) of code a hostile checkpoint asks for."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return evil_code(tmp_path)


@pytest.mark.parametrize("form", ["file", "module"])
def test_a_checkpoint_naming_code_is_refused_through_the_cli_before_any_import(
    tmp_path, evil, form, capsys
):
    from arctax.cli import main

    cls = evil[0] if form == "file" else evil[1]
    ckpt = save_evil_ckpt(tmp_path / "evil.ckpt", cls)
    rc = main(["--config", str(REPO / "config/demo.yaml"), "evaluate", "--checkpoint",
               str(ckpt), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
               "--label", "x"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and not evil[2].exists(), err
    assert "evilpkg.payload" not in sys.modules
    for part in (str(ckpt), repr(cls), "'models.mine.class", "refused before importing"):
        assert part in err, (part, err)
    assert not (tmp_path / "out").exists()  # nothing written either


def test_inspect_reports_the_class_and_imports_nothing(tmp_path, evil, capsys):
    from arctax.cli import main
    from arctax.evaluation.inspection import inspect_checkpoint

    ckpt = save_evil_ckpt(tmp_path / "evil.ckpt", evil[1])
    found = inspect_checkpoint(ckpt)
    assert found.model_name == "mine" and found.model_class == evil[1]
    assert main(["inspect", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert f"asks for class {evil[1]!r}" in out and "models.mine.class" in out
    assert not evil[2].exists() and "evilpkg.payload" not in sys.modules
    # a built-in's checkpoint asks for no class
    save_arctax_ckpt(tmp_path / "ok.ckpt")
    assert inspect_checkpoint(tmp_path / "ok.ckpt").model_class is None


def test_a_builtin_checkpoint_that_names_a_class_is_refused(tmp_path, evil):
    ckpt = save_evil_ckpt(tmp_path / "evil.ckpt", evil[0], name="encoder_decoder")
    refused(ckpt, "built-in model 'encoder_decoder'", "never the checkpoint")
    assert not evil[2].exists()


def own_ckpt(path: Path, class_path: str, **extra_hp) -> torch.nn.Module:
    """A checkpoint of the user model Tiny (tests/models/own_models.py), as training saves it."""
    torch.manual_seed(0)
    model = build_model("mine", OWN_CFG, class_path)
    hp = {"model_name": "mine", "model_cfg": OWN_CFG, "trial69": {}, "k": 2,
          "model_class": class_path, **extra_hp}  # fmt: skip
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 0, "global_step": 1, "state_dict": sd, "hyper_parameters": hp}, path)
    return model


OWN_CFG = {"d_model": 16, "n_heads": 2, "d_ff": 32}


def _loading(s: Settings) -> tuple:
    """What load_model takes of the settings ``s``: its models and limits."""
    return s.models, s.limits


def own_cfg(class_path: str, **block) -> Settings:
    return load_settings(overrides={"models": {"mine": {"class": class_path, **OWN_CFG, **block}}})


def test_a_user_class_loads_when_the_config_names_it_and_its_code_is_unchanged(tmp_path):
    own = write_own(tmp_path)
    spec = f"{own}:Tiny"
    model = own_ckpt(tmp_path / "mine.ckpt", spec, model_code_sha256=source_sha256(spec))
    loaded, info = load_model(tmp_path / "mine.ckpt", *_loading(own_cfg(spec)))
    assert type(loaded).__name__ == "Tiny"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  loaded.state_dict().values(), strict=True))  # fmt: skip
    assert info["model_class"] == spec and info["model_code"]["accepted_change"] is False
    assert info["model_code"]["sha256"] == info["model_code"]["recorded_sha256"]
    # the config names another class, or none: refused, naming what it asks for and the key
    for cfg in (own_cfg(f"{own}:NoDecoding"), CFG):
        refused(tmp_path / "mine.ckpt", re.escape(repr(spec)), r"'models\.mine\.class", cfg=cfg)


@pytest.mark.parametrize("where", ["hyper_parameters", "provenance.json"])
def test_changed_class_code_is_refused_unless_accepted(tmp_path, where):
    own = write_own(tmp_path)
    spec = f"{own}:Tiny"
    path = tmp_path / "mine.ckpt"
    sha = source_sha256(spec)
    if where == "hyper_parameters":
        own_ckpt(path, spec, model_code_sha256=sha)
    else:  # older checkpoints: the sha256 only in the provenance.json training wrote beside
        own_ckpt(path, spec)
        (tmp_path / "provenance.json").write_text(
            json.dumps({"model_class": spec, "model_code_sha256": sha})
        )
    Path(own).write_text(Path(own).read_text() + "\n# edited after training\n")
    with pytest.raises(CheckpointError) as e:
        load_model(path, *_loading(own_cfg(spec)))
    msg = str(e.value)
    assert str(path) in msg and sha[:16] in msg and "models.mine.accept_changed_code: true" in msg
    _, info = load_model(path, *_loading(own_cfg(spec, accept_changed_code=True)))
    code = info["model_code"]
    assert code["accepted_change"] is True and code["recorded_sha256"] == sha != code["sha256"]


def test_training_records_the_class_and_its_code_in_the_checkpoint(tmp_path):
    from arctax.training.module import ARCLitModule

    own = write_own(tmp_path)
    mine = own_cfg(f"{own}:Tiny")
    module = ARCLitModule.for_model(mine.model("mine"), mine.trial69, mine.data.context_pairs)
    assert module.hparams["model_class"] == f"{own}:Tiny"
    assert module.hparams["model_code_sha256"] == source_sha256(f"{own}:Tiny")
    champ = ARCLitModule.for_model(CFG.model("champion"), CFG.trial69, CFG.data.context_pairs)
    assert champ.hparams["model_code_sha256"] is None


def test_hyper_parameters_that_do_not_fit_the_weights_allocate_nothing(tmp_path):
    path = tmp_path / "big.ckpt"
    save_arctax_ckpt(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["model_cfg"] = {**TINY_MODELS["encoder_decoder"], "d_model": 65536}
    torch.save(ckpt, path)
    # 65536-wide layers would need tens of GB: sized from the hyper-parameters, refused first
    refused(path, "the checkpoint's own", "over config key 'limits.max_model_elements'")
    ckpt["hyper_parameters"]["model_cfg"] = {**TINY_MODELS["encoder_decoder"], "d_model": 64}
    torch.save(ckpt, path)  # within the bound: built on the meta device, it needs nothing
    refused(path, "do not fit", "shape")
    ckpt["hyper_parameters"]["k"] = 10**9
    torch.save(ckpt, path)
    refused(path, "hyper_parameters.k")


def test_a_provenance_json_beside_decides_no_code(tmp_path):
    """provenance.json is read for one thing: the sha256 to refuse changed code with. An
    unreadable one, or one about another class, changes nothing; it never names a class."""
    own = write_own(tmp_path)
    spec = f"{own}:Tiny"
    own_ckpt(tmp_path / "mine.ckpt", spec)
    prov = tmp_path / "provenance.json"
    for text in ("{not json", json.dumps({"model_class": "evil.py:X", "model_code_sha256": "0"})):
        prov.write_text(text)
        _, info = load_model(tmp_path / "mine.ckpt", *_loading(own_cfg(spec)))
        assert info["model_class"] == spec and info["model_code"]["recorded_sha256"] is None
    prov.write_text(json.dumps({"model_class": spec, "model_code_sha256": "0" * 64}))
    refused(tmp_path / "mine.ckpt", "accept_changed_code", cfg=own_cfg(spec))


# ---- a checkpoint costs what it weighs (issue 36) -------------------------------------------


def test_a_dense_but_transposed_weight_loads_and_an_overlapping_view_does_not(tmp_path):
    path = tmp_path / "m.ckpt"
    model = save_arctax_ckpt(path)
    ckpt = torch.load(path, weights_only=True)
    key = next(k for k, v in ckpt["state_dict"].items() if v.ndim == 2)
    w = ckpt["state_dict"][key]
    ckpt["state_dict"][key] = w.t().contiguous().t()  # another layout, every element apart
    torch.save(ckpt, path)
    assert not ckpt["state_dict"][key].is_contiguous()
    loaded, _ = load_model(path, CFG.models, CFG.limits)
    assert torch.equal(
        loaded.state_dict()[key.removeprefix("model.")],
        model.state_dict()[key.removeprefix("model.")],
    )
    flat = w.reshape(-1).clone()
    ckpt["state_dict"][key] = flat.as_strided(w.shape, (1, 1))  # elements share places
    torch.save(ckpt, path)
    refused(path, "a view of shape", "overlapping")


def test_the_size_bound_is_a_config_key_named_in_the_refusal(tmp_path):
    path = tmp_path / "m.ckpt"
    save_arctax_ckpt(path)
    small = load_settings(overrides={"limits": {"max_model_elements": 1000}})
    refused(path, r"over config key 'limits.max_model_elements' \(1,000\)", cfg=small)
    assert (
        load_model(path, CFG.models, CFG.limits)[0] is not None
    )  # the default bound holds a tiny model


def test_a_provenance_json_that_is_deep_or_a_device_is_no_proof_and_no_error(tmp_path):
    path = tmp_path / "m.ckpt"
    save_arctax_ckpt(path)
    prov = tmp_path / "provenance.json"
    prov.write_bytes(b"[" * 10**5 + b"]" * 10**5)
    assert load_model(path, CFG.models, CFG.limits)[1]["trained_here"] is False
    prov.unlink()
    prov.symlink_to("/dev/zero")
    assert load_model(path, CFG.models, CFG.limits)[1]["trained_here"] is False
