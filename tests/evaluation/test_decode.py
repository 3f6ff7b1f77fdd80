"""KV-cached greedy decoding equals the naive loop and the teacher-forced forward."""

import numpy as np
import pytest
import torch

from arctax.config import load_config
from arctax.data.collate import MODEL_FORMAT, collate
from arctax.data.dataset import load_split
from arctax.data.tokenize import PositionTracker
from arctax.evaluation.decode import greedy_decode
from arctax.models import build_model
from tests.conftest import TINY_MODELS, make_example, memorise

NAMES = ["champion", "encoder_decoder", "decoder_only"]


@pytest.fixture(scope="module")
def test_examples(arc1):
    ev = list(arc1[1])
    return [make_example(ev[i], split="test", idx=i) for i in range(6)]


@pytest.mark.parametrize("name", NAMES)
def test_start_step_logits_equal_forward(name, test_examples):
    # float64: the cached and the full forward take different kernels; in float32 their last
    # bits differ by CPU (AVX-512 / AVX2 / default), in float64 far below the tolerance
    torch.manual_seed(0)
    model = build_model(name, TINY_MODELS[name]).double().eval()
    b = collate(test_examples, MODEL_FORMAT[name])
    with torch.no_grad():
        full = model(b)
        logits, cache = model.start(b)
        labels = b["labels"]
        first = (labels != -100).float().argmax(1)  # first answer position per sample
        rows = torch.arange(len(labels))
        tracker = PositionTracker(len(labels))
        for t in range(8):
            assert torch.allclose(logits, full[rows, first + t], atol=1e-10), (name, t)
            tok = labels[rows, first + t].clamp(min=0)
            pos = torch.from_numpy(tracker.advance(tok.numpy()).copy())
            logits = model.step(cache, tok, pos)


AS_RUN_EXP2 = {**TINY_MODELS["encoder_decoder"], "positions": "grid2d_flat", "init": "xavier",
               "embed_scale": True, "embedding": "perminv_table"}  # fmt: skip


def test_start_step_equals_forward_with_flat_positions_over_whole_answers(test_examples):
    """``grid2d_flat`` needs the grid's width, which decoding learns when row 0 ends: the cached
    logits equal the forward's on every token of every answer (all rows, not only the first)."""
    torch.manual_seed(0)
    model = build_model("perminv", AS_RUN_EXP2, "arctax.models.encoder_decoder:EncoderDecoder")
    model = model.double().eval()
    b = collate(test_examples, "seq2seq")
    labels = b["labels"]
    n = int((labels != -100).sum(1).min())
    assert n > int(b["tgt_pos"][:, :, 1].max()) + 1  # past the end of row 0 everywhere
    with torch.no_grad():
        full = model(b)
        logits, cache = model.start(b)
        tracker = PositionTracker(len(labels))
        for t in range(n):
            assert torch.allclose(logits, full[:, t], atol=1e-10), t
            tok = labels[:, t]
            pos = torch.from_numpy(tracker.advance(tok.numpy()).copy())
            logits = model.step(cache, tok, pos)


@pytest.mark.parametrize("name", NAMES)
def test_cached_equals_naive(name, test_examples):
    # float64, so that no argmax is a near-tie that kernel differences between CPUs could flip
    torch.manual_seed(1)
    model = build_model(name, TINY_MODELS[name]).double()
    b = collate(test_examples, MODEL_FORMAT[name])
    g1, n1 = greedy_decode(model, b, 40, use_cache=True)
    g2, n2 = greedy_decode(model, b, 40, use_cache=False)
    assert np.array_equal(n1, n2)
    for a, c in zip(g1, g2, strict=True):
        assert (a is None and c is None) or np.array_equal(a, c)
    assert model.training  # mode restored


def test_decodes_a_memorised_answer(tiny_data):
    """A model that has memorised four answers (every answer token wins by a clear margin)
    must generate each of them exactly, shape included: the end markers set the shape.

    Trained to a criterion, not for a fixed number of steps: the steps needed differ between
    CPUs (AVX-512, AVX2, default kernels), the property tested does not."""
    torch.manual_seed(0)
    ds = load_split(tiny_data, "train")
    exs = [ds[i] for i in range(4)]
    model = build_model("encoder_decoder", dict(TINY_MODELS["encoder_decoder"], dropout=0.0))
    b = collate(exs, "seq2seq")
    memorise(model, b, lr=load_config()["trial69"]["optimizer"]["lr"])
    grids, _ = greedy_decode(model, b, 200)
    for g, e in zip(grids, exs, strict=True):
        assert g is not None and np.array_equal(g, e["query_out"])
