"""Models of one's own: class paths, blocks, extends, the protocol, the fallback decoding."""

from __future__ import annotations

import pytest
import torch

from arctax.config import ConfigError
from arctax.data.collate import collate
from arctax.evaluation.decode import greedy_decode
from arctax.models import ModelError, build_model, protocol_problems, resolve_model
from arctax.models.encoder_decoder import EncoderDecoder
from arctax.settings import load_settings
from tests.conftest import TINY_MODELS, make_example
from tests.models.own_models import write


@pytest.fixture
def own(tmp_path):
    return write(tmp_path)


def test_a_class_in_a_file_outside_the_repo_builds_and_runs(own, arc1):
    spec = resolve_model("mine", {"d_model": 16}, f"{own}:Tiny")
    model = spec.build()
    assert spec.fmt == "seq2seq" and type(model).__name__ == "Tiny"
    b = collate([make_example(next(iter(arc1[0])))], "seq2seq")
    assert model(b).shape == (*b["labels"].shape, 15)
    # the module is imported once per process: the same class each time
    assert resolve_model("mine", {}, f"{own}:Tiny").cls is spec.cls


@pytest.mark.parametrize(
    ("path", "block", "fragment"),
    [
        ("no/such/file.py:Tiny", {}, "file no/such/file.py not found"),
        ("surely_no_module_xyz:Tiny", {}, "module surely_no_module_xyz is not importable"),
        ("{own}:Missing", {}, "has no Missing"),
        ("{own}:Tiny", {"d_mdl": 8}, "does not fit Tiny(d_model, n_heads, d_ff)"),
        ("{own}:NoFormat", {}, "lacks the model protocol (docs/MODELS.md): class attribute fmt"),
        ("{own}:NoDecoding", {}, "no start / step for cached decoding"),
        ("not a path", {}, "expected 'package.module:Name'"),
    ],
)
def test_each_bad_model_is_one_line_naming_the_key(own, path, block, fragment):
    with pytest.raises(ModelError) as e:
        resolve_model("mine", block, path.format(own=own))
    msg = str(e.value)
    assert fragment in msg and "models.mine" in msg and "\n" not in msg


def test_builtin_names_take_no_class_and_unknown_names_need_one():
    with pytest.raises(ModelError, match="'champion' is a built-in model"):
        resolve_model("champion", {}, "x.py:Y")
    with pytest.raises(ModelError, match=r"config key 'models\.gru\.class'"):
        resolve_model("gru", {})


def test_extends_takes_the_base_block_then_its_own_keys(own):
    cfg = load_settings(overrides={"models": {
        "mine": {"class": f"{own}:Tiny", "extends": "encoder_decoder", "d_ff": 96},
        "decoder_only": None,
    }})  # fmt: skip
    assert list(cfg.models) == ["champion", "encoder_decoder", "mine"]
    block = cfg.models["mine"].config()
    assert block["d_ff"] == 96 and block["d_model"] == cfg.models["encoder_decoder"].args["d_model"]
    assert "class" not in block and "extends" not in block
    assert cfg.models["mine"].cls == f"{own}:Tiny" and cfg.models["champion"].cls is None
    cyc = {"models": {"a": {"class": "x.py:A", "extends": "b"},
                      "b": {"class": "x.py:B", "extends": "a"}}}  # fmt: skip
    with pytest.raises(ConfigError, match="makes a cycle"):
        load_settings(overrides=cyc)  # the settings are built once: the cycle fails there


def test_the_builtins_have_the_protocol():
    from arctax.models import REGISTRY

    assert all(protocol_problems(cls) == [] for cls in REGISTRY.values())
    assert protocol_problems(int) == ["<class 'int'> is not a torch.nn.Module subclass"]


def test_fallback_decoding_equals_cached_decoding_for_a_builtin(arc1):
    """The declared fallback (supports_cache = False) gives the cached decoder's answers."""

    class Fallback(EncoderDecoder):
        supports_cache = False

    torch.manual_seed(0)
    cached = build_model("encoder_decoder", TINY_MODELS["encoder_decoder"]).double().eval()
    fallback = Fallback(**TINY_MODELS["encoder_decoder"]).double().eval()
    fallback.load_state_dict(cached.state_dict())
    train = list(arc1[0])
    b = collate([make_example(train[i], idx=i) for i in (0, 1, 2, 5)], "seq2seq")
    grids_c, steps_c = greedy_decode(cached, b, 60)  # supports_cache defaults to True
    grids_f, steps_f = greedy_decode(fallback, b, 60)
    assert (steps_c == steps_f).all() and steps_c.max() > 1
    for a, g in zip(grids_c, grids_f, strict=True):
        assert (a is None and g is None) or (a.shape == g.shape and (a == g).all())


@pytest.mark.parametrize("name", ["champion", "encoder_decoder", "decoder_only"])
def test_model_elements_is_what_building_the_model_takes(name):
    """Sized from the block alone (layer counts extrapolated from 1, 2 and 3 layers), it is
    exactly the built model's parameters + buffers + MODULE_ELEMENTS per module."""
    import torch

    from arctax.models import MODULE_ELEMENTS, build_model, model_elements
    from arctax.settings import load_settings

    block = load_settings().models[name].config()
    block = {k: 5 if "layers" in k else v for k, v in block.items()}
    with torch.device("meta"):
        m = build_model(name, block)
    tensors = [*m.parameters(), *m.buffers()]
    built = sum(t.numel() for t in tensors) + MODULE_ELEMENTS * sum(1 for _ in m.modules())
    assert model_elements(name, block) == built


def test_model_elements_counts_a_class_whole_when_its_cost_is_not_linear(own):
    """A class of one's own whose size is not linear in a layer count is built (on meta) and
    counted whole, never extrapolated."""
    import torch

    from arctax.models import MODULE_ELEMENTS, build_model, model_elements

    spec = f"{own}:Quadratic"
    with torch.device("meta"):
        m = build_model("q", {"n_layers": 4}, spec)
    built = sum(p.numel() for p in m.parameters()) + MODULE_ELEMENTS * sum(1 for _ in m.modules())
    assert model_elements("q", {"n_layers": 4}, spec) == built
