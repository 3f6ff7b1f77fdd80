"""LoRA layers: a fresh adapter changes nothing, only adapters learn, adapters are per sample."""

from __future__ import annotations

import pytest
import torch

from arctax.adaptation.lora import inject_lora, lora_parameters
from arctax.data.collate import MODEL_FORMAT, collate
from arctax.evaluation.decode import greedy_decode
from arctax.models import build_model
from tests.conftest import TINY_MODELS, make_example

NAMES = ["champion", "encoder_decoder", "decoder_only"]
ALL = ["q", "kv", "out", "mlp", "head", "bridge", "context"]


@pytest.fixture(scope="module")
def examples(arc1):
    ev = list(arc1[1])
    return [make_example(ev[i], split="test", idx=i) for i in range(4)]


@pytest.mark.parametrize("name", NAMES)
def test_zero_initialised_adapters_leave_logits_bitwise_equal(name, examples):
    torch.manual_seed(0)
    model = build_model(name, TINY_MODELS[name]).eval()
    b = collate(examples, MODEL_FORMAT[name])
    with torch.no_grad():
        before = model(b)
        first, _ = model.start(b)
        grids, _ = greedy_decode(model, b, 30)
    slot, layers = inject_lora(model, ALL, rank=4, alpha=8.0, n_adapters=3)
    assert layers and all(layer.B.abs().sum() == 0 for layer in layers)
    slot.index = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        assert torch.equal(model(b), before)
        assert torch.equal(model.start(b)[0], first)
        again, _ = greedy_decode(model, b, 30)
    assert all(
        (g is None and h is None) or (g == h).all() for g, h in zip(grids, again, strict=True)
    )


@pytest.mark.parametrize("name", NAMES)
def test_only_adapter_parameters_receive_gradients(name, examples):
    torch.manual_seed(0)
    model = build_model(name, TINY_MODELS[name])
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, layers = inject_lora(model, ["q", "kv", "out", "mlp"], rank=4, alpha=8.0)
    b = collate(examples, MODEL_FORMAT[name])
    opt = torch.optim.Adam(lora_parameters(layers), lr=1e-2)
    for _ in range(2):  # two steps: the second one moves A through a non-zero B
        opt.zero_grad()
        model(b).float().logsumexp(-1).mean().backward()
        opt.step()
    adapter = {id(p) for p in lora_parameters(layers)}
    for n, p in model.named_parameters():
        if id(p) in adapter:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None and not p.requires_grad, n
    now = {n.replace(".base.", "."): p for n, p in model.named_parameters() if id(p) not in adapter}
    assert now.keys() == base.keys() and all(torch.equal(now[n], base[n]) for n in base)


def test_each_sample_uses_its_own_adapter(examples):
    torch.manual_seed(0)
    model = build_model("encoder_decoder", TINY_MODELS["encoder_decoder"]).eval()
    slot, layers = inject_lora(
        model, ["q", "kv", "out", "mlp", "head"], rank=2, alpha=2.0, n_adapters=2
    )
    with torch.no_grad():
        for layer in layers:
            layer.B[1].normal_()  # adapter 1 changes the model, adapter 0 does not
    b = collate(examples[:2], "seq2seq")
    with torch.no_grad():
        slot.index = torch.tensor([0, 0])
        base = model(b)
        slot.index = torch.tensor([0, 1])
        mixed = model(b)
    assert torch.equal(mixed[0], base[0]) and not torch.allclose(mixed[1], base[1])


def test_decoder_only_has_no_head_and_unknown_targets_fail():
    model = build_model("decoder_only", TINY_MODELS["decoder_only"])
    with pytest.raises(ValueError, match="match no layer"):
        inject_lora(model, ["head"], rank=2, alpha=2.0)
    with pytest.raises(ValueError, match="unknown"):
        inject_lora(model, ["attention"], rank=2, alpha=2.0)
