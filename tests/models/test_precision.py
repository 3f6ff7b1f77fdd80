"""fp16 / bf16 safety (docs/CUDA.md, "fp16 safety"): under autocast every model gives a
finite loss and finite gradients, with a sample without demonstrations (the champion's
all-masked pair softmax) and padding in the batch; the loss is summed in float32."""

import pytest
import torch

from arctax.data.collate import MODEL_FORMAT, collate
from arctax.data.tokenize import IGNORE_INDEX
from arctax.models import build_model
from arctax.training.module import answer_metrics, answer_sums
from tests.conftest import TINY_MODELS, make_example

NAMES = ["champion", "encoder_decoder", "decoder_only"]


@pytest.fixture(scope="module")
def batch_examples(arc1):
    train = list(arc1[0])
    exs = [make_example(train[i], idx=i) for i in (0, 1, 2, 5)]
    exs[1] = dict(exs[1], context=[])  # no demonstration pair at all: every pair masked
    return exs


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_autocast_loss_and_gradients_are_finite(name, dtype, batch_examples):
    torch.manual_seed(0)
    model = build_model(name, TINY_MODELS[name]).train()
    b = collate(batch_examples, MODEL_FORMAT[name], k=2)
    with torch.autocast("cpu", dtype=dtype):
        logits = model(b)
        loss = answer_metrics(logits, b["labels"])["loss"]
    assert logits.dtype == dtype  # the matmuls really ran in 16 bits
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert not bad, bad


def test_the_loss_is_summed_in_float32_past_the_fp16_range():
    """A full batch sums ~10^5 token losses: far above fp16's 65504, so the sum must not be
    taken in the logits' 16-bit dtype (answer_sums casts to float32 first)."""
    torch.manual_seed(0)
    logits = torch.randn(32, 1500, 15).half()
    labels = torch.randint(0, 15, (32, 1500))
    labels[:, -10:] = IGNORE_INDEX
    s = answer_sums(logits, labels)["loss_sum"]
    ref = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).double(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    assert s.dtype == torch.float32 and float(s) > 65504
    assert abs(float(s) - float(ref)) / float(ref) < 1e-5
