"""The paper's ablation ladder (config/ladder.yaml: corrected; config/ladder_as_run.yaml: as its
code ran it): the +Grid2D and +PermInv rungs as built-in code configured by the config, their
checkpoints, and the size-match flag."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from arctax.config import DEFAULT_CONFIG
from arctax.data.collate import collate
from arctax.evaluation.checkpoints import load_model
from arctax.models import ModelError, build_model, count_parameters, size_flags
from arctax.models.encoder_decoder import EncoderDecoder, Grid2DPositions
from arctax.models.layers import LookupTable, token_embedding
from arctax.settings import load_settings
from arctax.training.module import ARCLitModule
from tests.conftest import REPO, TINY_MODELS, make_example

LADDER = REPO / "config" / "ladder.yaml"
AS_RUN = REPO / "config" / "ladder_as_run.yaml"
RUNGS = {"decoder_only", "encoder_decoder", "grid2d", "perminv", "champion"}


@pytest.fixture(scope="module")
def cfg():
    """The ladder overlay on the tiny sizes (its rungs extend the encoder-decoder's block)."""
    return load_settings(DEFAULT_CONFIG, LADDER, overrides={"models": TINY_MODELS})


@pytest.fixture(scope="module")
def batch(arc1):
    train = list(arc1[0])
    return collate([make_example(train[i], idx=i) for i in (0, 1, 5)], "seq2seq")


def rung(cfg, name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, cfg.models[name].config(), cfg.models[name].cls)


def test_the_ladder_has_five_rungs_built_from_the_config(cfg):
    assert set(list(cfg.models)) == RUNGS
    assert set(cfg.adapt.models) == RUNGS
    grid2d, perminv = rung(cfg, "grid2d"), rung(cfg, "perminv")
    assert type(grid2d) is EncoderDecoder and grid2d.positions == "grid2d"
    assert isinstance(grid2d.embed, torch.nn.Embedding)
    assert isinstance(perminv.embed, LookupTable) and perminv.positions == "grid2d"
    exp0 = rung(cfg, "encoder_decoder")
    assert grid2d.embed_scale == perminv.embed_scale == exp0.embed_scale == math.sqrt(32)
    assert exp0.positions == "1d"
    # each rung changes one thing from the rung below: positions, then the embedding table
    ed, g, p = (cfg.models[m].config() for m in ("encoder_decoder", "grid2d", "perminv"))
    assert {k for k in {**ed, **g} if ed.get(k) != g.get(k)} == {"positions"}
    assert {k for k in {**g, **p} if g.get(k) != p.get(k)} == {"embedding"}
    as_run = load_settings(DEFAULT_CONFIG, AS_RUN, overrides={"models": TINY_MODELS})
    assert rung(as_run, "grid2d").positions == rung(as_run, "perminv").positions == "grid2d_flat"
    assert {k: v for k, v in as_run.models["perminv"].config().items() if k != "positions"} == {
        k: v for k, v in p.items() if k != "positions"}  # fmt: skip
    # the paper's Exp 1 / Exp 2 sizes at full size: Exp 0's, dropout 0.167
    full = load_settings(DEFAULT_CONFIG, LADDER)
    for name in ("encoder_decoder", "grid2d", "perminv"):
        block = full.models[name].config()
        assert (block["d_model"], block["n_encoder_layers"], block["n_decoder_layers"]) == (
            168, 1, 3)  # fmt: skip
        assert (block["n_heads"], block["d_ff"], block["dropout"]) == (4, 672, 0.167)
        assert (block["init"], block["embed_scale"]) == ("xavier", True)


def test_perminv_is_the_originals_plain_kaiming_table():
    """G[idx], kaiming_uniform_(G, a=sqrt(5)) as the original (bound 1 / sqrt(d)), no padding
    row: every token, the pad included, has its own trainable row, and permuting colours is not
    undone by it. ``kaiming_a0`` is the 2.45x larger table arctax had before."""
    torch.manual_seed(0)
    table = LookupTable(15, 64)
    bound = 1 / math.sqrt(64)
    assert table.weight.shape == (15, 64) and table.weight.abs().max() <= bound
    assert table.weight.abs().max() > 0.9 * bound  # uniform up to the bound, not N(0, 1)
    wide = token_embedding("perminv_table", 15, 64, "kaiming_a0").weight
    assert bound < wide.abs().max() <= math.sqrt(6 / 64)
    idx = torch.tensor([[3, 10, 1]])
    assert torch.equal(table(idx), table.weight[idx])
    assert table(torch.tensor([10])).abs().sum() > 0  # the pad token: no zero padding row
    swapped = table(torch.tensor([1, 3])).sum(0)  # a colour permutation changes the sequence
    assert not torch.allclose(table(torch.tensor([3, 1])), table(torch.tensor([1, 3])))
    assert torch.allclose(swapped, table(torch.tensor([3, 1])).sum(0))  # only the order moved


def test_perminv_trains_a_step_and_counts_its_parameters(cfg, batch):
    model = rung(cfg, "perminv").train()
    n = count_parameters(model)
    assert n == count_parameters(rung(cfg, "grid2d"))  # the table replaces nn.Embedding 1:1
    assert n == count_parameters(rung(cfg, "encoder_decoder"))  # Grid2D has no parameters
    logits = model(batch)
    loss = F.cross_entropy(logits.transpose(1, 2), batch["labels"], ignore_index=-100)
    assert torch.isfinite(loss)
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["embed.weight"].abs().sum() > 0
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0


def test_grid2d_option_equals_the_grid2d_mixin(cfg, batch):
    """The built-in option is the champion's Grid2D positions (the example's class)."""

    class Mixin(Grid2DPositions, EncoderDecoder):
        pass

    block = cfg.models["grid2d"].config()
    torch.manual_seed(0)
    option = EncoderDecoder(**block).eval()
    torch.manual_seed(0)
    mixin = Mixin(**{**block, "positions": "1d"}).eval()
    with torch.no_grad():
        assert torch.equal(option(batch), mixin(batch))
        one_d = EncoderDecoder(**{**block, "positions": "1d"}).eval()
        one_d.load_state_dict(option.state_dict())
        assert not torch.allclose(one_d(batch), option(batch))  # the positions do matter


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [("embedding", "perm_inv", "embedding 'perm_inv' is not one of lookup, perminv_table"),
     ("positions", "2d", "positions '2d' is not one of 1d, grid2d, grid2d_flat"),
     ("init", "he", "init 'he' is not one of torch, xavier"),
     ("table_init", "x", "table_init 'x' is not one of kaiming_a_sqrt5, kaiming_a0")],
)  # fmt: skip
def test_a_bad_option_is_one_line_naming_the_block(cfg, key, value, fragment):
    with pytest.raises(ModelError) as e:
        build_model("perminv", {**cfg.models["perminv"].config(), key: value},
                    cfg.models["perminv"].cls)  # fmt: skip
    assert "config block 'models.perminv' does not build" in str(e.value)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["grid2d", "perminv"])
def test_a_rungs_checkpoint_rebuilds_the_same_rung(cfg, batch, tmp_path, name):
    """The hyper-parameters training saves rebuild the rung: class, options, weights, logits."""
    torch.manual_seed(1)
    module = ARCLitModule.for_model(cfg.models[name], cfg.trial69, cfg.data.context_pairs)
    path = tmp_path / f"{name}.ckpt"
    torch.save({"epoch": 0, "global_step": 1, "pytorch-lightning_version": "2.6.6",
                "state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
               path)  # fmt: skip
    model, info = load_model(path, cfg.models, cfg.limits)  # the config names its class: it loads
    assert info["model_name"] == name and info["model_class"] == cfg.models[name].cls
    assert type(model) is EncoderDecoder and model.positions == "grid2d"
    assert isinstance(model.embed, LookupTable) == (name == "perminv")
    assert model.embed_scale == module.model.embed_scale
    module.model.eval()
    with torch.no_grad():
        assert torch.equal(model.eval()(batch), module.model(batch))


def test_size_flag_fires_on_a_mismatch_only():
    assert size_flags({"champion": 1_000_000, "a": 1_049_000, "b": 951_000}) == {}
    flags = size_flags({"champion": 1_000_000, "a": 1_051_000, "b": 800_000, "c": 1_000_000})
    assert set(flags) == {"a", "b"}
    assert "+5.1% of the champion's 1,000,000" in flags["a"] and "-20.0%" in flags["b"]
    assert size_flags({"a": 1, "b": 100}) == {}  # no champion: nothing to match


def test_the_full_size_ladder_is_size_matched_and_the_demo_is_flagged():
    """At the paper's sizes every rung of both ladders is within +-5% of the champion (printed);
    the demo's are not."""
    for files, flagged in (((DEFAULT_CONFIG, LADDER), set()), ((DEFAULT_CONFIG, AS_RUN), set()),
                           ((DEFAULT_CONFIG, REPO / "config" / "demo.yaml", LADDER),
                            {"encoder_decoder", "grid2d", "perminv", "decoder_only"})):  # fmt: skip
        c = load_settings(*files)
        counts = {m: count_parameters(rung(c, m)) for m in list(c.models)}
        print("\nparameters:", counts)
        assert set(size_flags(counts)) == flagged


@pytest.mark.slow
def test_the_middle_rungs_pass_every_smoke_check(cfg, tiny_data):
    """Training path, checkpoint reload, cached decoding (Grid2D from the decoded token's real
    coordinate) and the recipe: the smoke test's checks on grid2d and perminv."""
    from arctax.training.smoke import format_table, smoke_test

    report = smoke_test(cfg, tiny_data, models=["grid2d", "perminv"])
    assert report["ok"], format_table(report)
    assert report["models"]["perminv"]["checks"]["kv_cache_decode"] == "ok"
    assert report["models"]["perminv"]["parameters"] == report["models"]["grid2d"]["parameters"]
