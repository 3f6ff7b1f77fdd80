"""KV-cached greedy decoding equals the naive loop and the teacher-forced forward."""

import numpy as np
import pytest
import torch

from arctax.data.collate import MODEL_FORMAT, collate
from arctax.data.tokenize import PositionTracker
from arctax.evaluation.decode import greedy_decode
from arctax.models import build_model
from tests.conftest import TINY_MODELS, make_example

NAMES = ["champion", "encoder_decoder", "decoder_only"]


@pytest.fixture(scope="module")
def test_examples(arc1):
    ev = list(arc1[1])
    return [make_example(ev[i], split="test", idx=i) for i in range(6)]


@pytest.mark.parametrize("name", NAMES)
def test_start_step_logits_equal_forward(name, test_examples):
    torch.manual_seed(0)
    model = build_model(name, TINY_MODELS[name]).eval()
    b = collate(test_examples, MODEL_FORMAT[name])
    with torch.no_grad():
        full = model(b)
        logits, cache = model.start(b)
        labels = b["labels"]
        first = (labels != -100).float().argmax(1)  # first answer position per sample
        rows = torch.arange(len(labels))
        tracker = PositionTracker(len(labels))
        for t in range(8):
            assert torch.allclose(logits, full[rows, first + t], atol=1e-5), (name, t)
            tok = labels[rows, first + t].clamp(min=0)
            pos = torch.from_numpy(tracker.advance(tok.numpy()).copy())
            logits = model.step(cache, tok, pos)


@pytest.mark.parametrize("name", NAMES)
def test_cached_equals_naive(name, test_examples):
    torch.manual_seed(1)
    model = build_model(name, TINY_MODELS[name])
    b = collate(test_examples, MODEL_FORMAT[name])
    g1, n1 = greedy_decode(model, b, 40, use_cache=True)
    g2, n2 = greedy_decode(model, b, 40, use_cache=False)
    assert np.array_equal(n1, n2)
    for a, c in zip(g1, g2, strict=True):
        assert (a is None and c is None) or np.array_equal(a, c)
    assert model.training  # mode restored


def test_decodes_a_memorised_answer(tiny_data):
    """Where every teacher-forced argmax is right, greedy decoding must reproduce the target
    exactly (same path), shape included: the end markers set the shape."""
    from arctax.config import load_config
    from arctax.data.dataset import load_split
    from arctax.training.module import answer_metrics
    from arctax.training.optim import build_optimizer

    torch.manual_seed(0)
    ds = load_split(tiny_data, "train")
    exs = [ds[i] for i in range(4)]
    model = build_model("encoder_decoder", dict(TINY_MODELS["encoder_decoder"], dropout=0.0))
    b = collate(exs, "seq2seq")
    opt = build_optimizer(model.parameters(), load_config()["trial69"])
    for _ in range(300):
        opt.zero_grad()
        answer_metrics(model(b), b["labels"])["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(b).argmax(-1)
    tf_right = ((pred == b["labels"]) | (b["labels"] == -100)).all(1)
    assert tf_right.sum() >= 2
    grids, _ = greedy_decode(model, b, 200)
    for g, e, ok in zip(grids, exs, tf_right.tolist(), strict=True):
        if ok:
            assert g is not None and np.array_equal(g, e["query_out"])
