"""The rung options as the original's code built them: its initialisation and embedding scale,
its PermInv table's init, its flat-index Grid2D positions (bug 3 on purpose), and its
decoder-only's measurement over the whole sequence; each labelled."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from arctax.config import DEFAULT_CONFIG
from arctax.data.collate import collate
from arctax.data.tokenize import IGNORE_INDEX, SEP, VOCAB_SIZE, encode_grid
from arctax.models import ModelError, build_model, option_labels, rung_options
from arctax.models.encoder_decoder import EncoderDecoder
from arctax.models.grid2d_pe import Grid2DPE, flat_positions, grid_width
from arctax.models.initialisation import xavier_
from arctax.settings import load_settings
from tests.conftest import REPO, TINY_MODELS, make_example

AS_RUN = REPO / "config" / "ladder_as_run.yaml"
CORRECTED = REPO / "config" / "ladder.yaml"


def test_grid2d_flat_puts_cell_3_of_a_3x3_grid_at_0_3():
    """Token 3 of their flattened 3x3 grid (cell (1, 0)) sat at (0, 3) of the 30-wide table;
    from the real coordinates it is (1, 0). Row 0 is the same under both."""
    _, pos = encode_grid(np.zeros((3, 3), dtype=int))
    pos = torch.from_numpy(pos)[None]  # c00 c01 c02 EOR c10 ...: cell 3 is token 4
    assert pos[0, 4].tolist() == [1, 0]
    assert grid_width(pos).tolist() == [3]
    flat = flat_positions(pos, grid_width(pos), 30)
    assert flat[0, 4].tolist() == [0, 3]
    assert torch.equal(flat[0, :4], pos[0, :4])  # row 0 and its end marker: the same
    assert flat[0, -1].tolist() == [0, 9]  # the end of grid after 9 cells
    big = torch.tensor([[[29, 29], [30, 0]]])  # the last cell of a 30x30 grid, its end
    assert flat_positions(big, torch.tensor([30]), 30).tolist() == [[[29, 29], [30, 0]]]


def test_the_grid2d_flat_model_embeds_the_flat_coordinate(arc1):
    """Two models with the same weights, ``grid2d`` and ``grid2d_flat``: the source embedding
    of cell (1, 0) of a grid of width W is the table's (1, 0) under one and (0, W) under the
    other; everything on row 0 is the same."""
    cfg = {**TINY_MODELS["encoder_decoder"], "dropout": 0.0}
    torch.manual_seed(0)
    real = EncoderDecoder(**cfg, positions="grid2d").eval()
    flat = EncoderDecoder(**cfg, positions="grid2d_flat").eval()
    flat.load_state_dict(real.state_dict())
    ex = make_example(next(iter(arc1[0])), idx=0)
    b = collate([ex], "seq2seq")
    w = int(ex["query_in"].shape[1])
    with torch.no_grad():
        a, f = real.embed_source(b), flat.embed_source(b)
    pe = Grid2DPE(cfg["d_model"])
    tok = real.tokens(b["src"][0, w + 1])  # cell (1, 0): after row 0 and its end marker
    assert torch.allclose(a[0, w + 1], tok + pe(torch.tensor([1, 0])))
    assert torch.allclose(f[0, w + 1], tok + pe(torch.tensor([0, w])))
    assert torch.allclose(a[0, : w + 1], f[0, : w + 1]) and not torch.allclose(a, f)


def _embedding_rms(model: EncoderDecoder) -> float:
    """RMS of the token embedding as the model adds it: its table times the scale."""
    return float((model.embed.weight.detach() * model.embed_scale).pow(2).mean().sqrt())


@pytest.mark.parametrize("ladder", [AS_RUN, CORRECTED])
def test_the_as_run_embeddings_have_the_originals_scale(ladder):
    """At full size (d_model 168): Exp 0 / 1's embedding, scaled, has the RMS of Xavier-uniform
    x sqrt(d_model) (~1.36); Exp 2's table keeps the original's own Kaiming a=sqrt(5) init
    (their Xavier loop skipped it: RMS 1 / sqrt(3) scaled); torch's N(0, 1) (arctax's own Exp 0)
    is neither."""
    cfg = load_settings(DEFAULT_CONFIG, ladder)
    d, v = 168, VOCAB_SIZE
    xavier = math.sqrt(2 / (d + v)) * math.sqrt(d)
    for name, want in (("encoder_decoder", xavier), ("grid2d", xavier),
                       ("perminv", 1 / math.sqrt(3))):  # fmt: skip
        torch.manual_seed(0)
        model = build_model(name, cfg.models[name].config(), cfg.models[name].cls)
        assert model.embed.weight.shape == (v, d)
        assert _embedding_rms(model) == pytest.approx(want, rel=0.10), name
    torch.manual_seed(0)
    own = build_model("encoder_decoder", load_settings().models["encoder_decoder"].config())
    assert _embedding_rms(own) == pytest.approx(1.0, rel=0.10)  # N(0, 1), unscaled
    assert abs(_embedding_rms(own) - xavier) > 0.25


def test_xavier_starts_the_attention_as_one_fused_projection():
    """Their layers kept q, k, v in one (3d, d) matrix (Xavier bound sqrt(6 / 4d)) with zero
    biases; the feed-forward layers and the output head get Xavier's own bound."""
    torch.manual_seed(0)
    m = EncoderDecoder(d_model=64, n_heads=4, n_encoder_layers=1, n_decoder_layers=1, d_ff=128,
                       init="xavier")  # fmt: skip
    attn = m.decoder[0].cross
    fused = math.sqrt(6 / (64 + 3 * 64))
    for w in (attn.q.weight, attn.kv.weight):
        assert fused * 0.9 < w.abs().max() <= fused
    assert all(
        float(b.detach().abs().max()) == 0 for b in (attn.q.bias, attn.kv.bias, attn.out.bias)
    )
    ff = m.encoder[0].mlp.net[0].weight  # (d_ff, d)
    assert ff.abs().max() <= math.sqrt(6 / (64 + 128)) and m.head.weight.abs().max() <= math.sqrt(
        6 / (64 + VOCAB_SIZE))  # fmt: skip
    torch.manual_seed(0)
    plain = EncoderDecoder(d_model=64, n_heads=4, n_encoder_layers=1, n_decoder_layers=1,
                           d_ff=128)  # fmt: skip
    assert plain.decoder[0].cross.q.bias.abs().max() > 0  # torch's own init: not zero
    xavier_(plain)  # the same function, applied after the fact
    assert plain.decoder[0].cross.q.bias.abs().max() == 0


def test_the_champion_refuses_an_initialisation_it_never_had():
    block = {**TINY_MODELS["champion"], "init": "xavier"}
    with pytest.raises(ModelError, match="the champion's init is torch, not 'xavier'"):
        build_model("champion", block)


def test_the_decoder_only_scores_its_whole_sequence_when_asked(arc1):
    """``loss_over: sequence`` labels every token after the first (the input's too), never
    the SEP; ``output`` keeps the answer's labels."""
    ex = make_example(list(arc1[0])[3], idx=0)
    b = collate([ex], "decoder_only")
    out = build_model("decoder_only", {**TINY_MODELS["decoder_only"], "loss_over": "output"})
    seq = build_model("decoder_only", {**TINY_MODELS["decoder_only"], "loss_over": "sequence"})
    assert torch.equal(out.loss_labels(b), b["labels"])
    labels = seq.loss_labels(b)[0]
    n = int(b["prompt_len"][0]) - 1  # input tokens; SEP at n
    assert torch.equal(labels[: n - 1], b["seq"][0, 1:n])  # input tokens 1..n-1
    assert labels[n - 1] == IGNORE_INDEX and SEP not in labels.tolist()
    assert torch.equal(labels[n:], b["labels"][0, n:])  # the output as before
    with pytest.raises(ModelError, match="loss_over 'all' is not one of output, sequence"):
        build_model("decoder_only", {**TINY_MODELS["decoder_only"], "loss_over": "all"})


def test_every_rung_option_is_labelled_and_listed_with_its_default():
    cfg = load_settings(DEFAULT_CONFIG, AS_RUN)
    opts = rung_options("perminv", cfg.models["perminv"].config(), cfg.models["perminv"].cls)
    assert opts == {"dropout": 0.167, "positions": "grid2d_flat", "embedding": "perminv_table",
                    "embed_scale": True, "init": "xavier", "table_init": "kaiming_a_sqrt5"}  # fmt: skip
    labels = option_labels(opts)
    assert any("bug 3 of the original, on purpose" in x for x in labels)
    assert any("Xavier" in x for x in labels) and any("PermInv" in x for x in labels)
    own = rung_options("encoder_decoder", load_settings().models["encoder_decoder"].config())
    assert own == {"dropout": 0.1, "positions": "1d", "embedding": "lookup",
                   "embed_scale": False, "init": "torch"}  # fmt: skip
    assert option_labels(own) == []  # the defaults: nothing to label
    dec = rung_options("decoder_only", cfg.models["decoder_only"].config())
    assert option_labels(dec) == [
        "loss and accuracy over the whole [input] SEP [output] sequence (the original's other "
        "decoder-only measurement)"
    ]
