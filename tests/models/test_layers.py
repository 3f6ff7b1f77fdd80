"""Shared attention: the fused CPU kernel's refusals fall back to the math kernel, same result."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from arctax.models.layers import attention
torch.manual_seed(0)
q, k, v = (torch.randn(4, 2, 300, 16, requires_grad=True) for _ in range(3))
mask = torch.rand(4, 1, 1, 300) > 0.1
with torch.autocast("cpu", dtype=torch.bfloat16):
    y = attention(q, k, v, attn_mask=mask)
    with sdpa_kernel(SDPBackend.MATH):
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
y.float().sum().backward()
assert torch.isfinite(q.grad).all()
print(float((y.float() - ref.float()).abs().max()))
"""


@pytest.mark.parametrize("capability", ["default", "avx2", None])
def test_bf16_attention_runs_under_every_kernel_path(capability):
    """Under ATEN_CPU_CAPABILITY below an AMX CPU's own, torch's fused bf16 kernel raises
    "pack_vnni2 is only supported when avx512 is supported"; ``attention`` must still answer,
    and answer what the math kernel answers (bf16 rounding apart)."""
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 0.05


def test_attention_on_meta_tensors_needs_no_autocast_query():
    """Shape-only passes (the GPU check's memory planning runs the model on ``meta``) must go
    straight to torch: autocast has no state for ``meta`` and asking for it raises."""
    import torch

    from arctax.models.layers import attention

    q, k, v = (torch.empty(2, 4, 9, 8, device="meta") for _ in range(3))
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool, device="meta")
    y = attention(q, k, v, attn_mask=mask, dropout_p=0.1)
    assert y.shape == (2, 4, 9, 8) and y.device.type == "meta"


# ---- fused kernels on CUDA: padding, and the watch that refuses the math kernel ----------


def _qkv(dtype, hd=42, t=17, s=17):
    import torch

    torch.manual_seed(0)
    q = torch.randn(3, 4, t, hd, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(3, 4, s, hd, dtype=dtype, requires_grad=True) for _ in range(2))
    mask = torch.rand(3, 1, 1, s) > 0.3
    mask[..., 0] = True  # every query has a key
    return q, k, v, mask


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("how", ["key mask", "causal", "plain", "one query, cached keys"])
def test_padded_attention_equals_unpadded(dtype, how):
    """The CUDA path's zero-padding of the head dim (42 -> 48) at the original scale gives the
    unpadded values and gradients (on CPU, where both run the same fused kernel family)."""
    import torch
    import torch.nn.functional as F

    from arctax.models.layers import attention

    dt = getattr(torch, dtype)
    q, k, v, mask = _qkv(dt, t=1 if how.startswith("one") else 17)
    mask = mask if how in ("key mask", "one query, cached keys") else None
    causal = how == "causal"
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    out = attention(q, k, v, mask, 0.0, causal, pad=True)
    assert out.shape == ref.shape
    grads = [torch.autograd.grad(y.float().square().sum(), (q, k, v)) for y in (ref, out)]
    torch.testing.assert_close(out, ref)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a)


def test_padding_without_the_original_scale_would_differ():
    """The test above can fail: padded at the padded width's own scale, the values move."""
    import torch
    import torch.nn.functional as F

    q, k, v, mask = _qkv(torch.float32)
    pad = [F.pad(t, (0, 6)) for t in (q, k, v)]
    wrong = F.scaled_dot_product_attention(*pad, attn_mask=mask)[..., :42]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (wrong - ref).abs().max() > 1e-3


def test_attention_pads_only_on_cuda_and_in_meta_estimates():
    """On CPU ``attention`` passes the head dim through (CPU results unchanged); under
    ``fused_attention_estimate`` a ``meta`` call runs the fused op CUDA would, padded."""
    import torch

    from arctax.models.layers import attention, fused_attention_estimate, watch_attention

    q, k, v, mask = (t.detach().to("meta") for t in _qkv(torch.float16))
    with watch_attention() as w, fused_attention_estimate():
        attention(q, k, v, attn_mask=mask, kind="masked")
        attention(q, k, v, is_causal=True, kind="causal")
    backends = {site.split(", ")[-1]: s.backends for site, s in w.sites.items()}
    assert backends == {"masked": {"efficient"}, "causal": {"flash"}}
    assert [c[4] for c in w.calls] == [48, 48]  # the padded head dim
    with watch_attention() as w:
        attention(*(t.detach() for t in _qkv(torch.float32)[:3]), kind="cpu")
    assert [c[4] for c in w.calls] == [42]


def test_watch_names_each_call_site_and_its_kernel(tiny_model_batch):
    """Every attention call of a model is recorded under its model line and kind."""
    from arctax.models.layers import watch_attention

    model, batch = tiny_model_batch
    model.eval()
    with watch_attention() as w:
        model(batch)
    kinds = sorted(site.split(", ", 1)[1] for site in w.sites)
    assert kinds == [
        "cross-attention, key mask",
        "cross-attention, key mask",
        "self-attention, causal",
        "self-attention, key mask",
        "self-attention, key mask",
    ]
    assert all(site.startswith(("champion.py:", "encoder_decoder.py:")) for site in w.sites)
    assert all(s.backends == {"flash"} and s.calls >= 1 for s in w.sites.values())


def test_a_forbidden_math_call_fails_naming_its_site_and_shapes(tiny_model_batch):
    """Where the math kernel is forbidden (CUDA in the smoke test; the CPU here, where dropout
    sends a call to it), a call that would fall back raises with its call site and shapes."""
    from arctax.models.layers import MathAttentionError, watch_attention

    model, batch = tiny_model_batch
    model.eval()
    with watch_attention(forbid_math=("cpu",)):
        model(batch)  # eval: no dropout, every call fused
    model.train()
    with watch_attention(forbid_math=("cpu",)), pytest.raises(MathAttentionError) as err:
        model(batch)
    msg = str(err.value)
    assert "would run the math kernel on cpu" in msg
    assert "encoder_decoder.py:" in msg and "self-attention, key mask" in msg
    assert "dropout 0.1" in msg and "q (" in msg


@pytest.fixture
def tiny_model_batch(arc1):
    import torch

    from arctax.data.collate import collate
    from arctax.models import build_model
    from tests.conftest import TINY_MODELS, make_example

    torch.manual_seed(0)
    model = build_model("champion", TINY_MODELS["champion"])
    train = list(arc1[0])
    batch = collate([make_example(train[i], idx=i) for i in (0, 1)], "champion", 2)
    return model, batch


@pytest.mark.parametrize("name", ["champion", "encoder_decoder", "decoder_only"])
def test_models_with_padded_heads_equal_unpadded(name, arc1, monkeypatch):
    """The CUDA layout run on CPU (every head padded, the key/value cache held padded): the
    training logits, their gradients and KV-cache decoding equal the unpadded model's."""
    import torch

    from arctax.data.collate import MODEL_FORMAT, collate
    from arctax.evaluation.decode import greedy_tokens
    from arctax.models import build_model, layers
    from tests.conftest import TINY_MODELS, make_example

    cfg = {**TINY_MODELS[name]}
    cfg["d_model"] = 36  # 4 heads of 9: padded to 16
    if name == "champion":
        cfg["context"] = {"d_model": 12, "n_heads": 4}  # heads of 3: padded to 8
    torch.manual_seed(0)
    model = build_model(name, cfg).eval()
    train = list(arc1[0])
    batch = collate([make_example(train[i], idx=i) for i in (0, 1, 5)], MODEL_FORMAT[name], 2)

    def run():
        model.zero_grad(set_to_none=True)
        logits = model(batch)
        logits.square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        return logits.detach(), grads, greedy_tokens(model, batch, 12)[0]

    ref = run()
    monkeypatch.setattr(layers, "PAD_DEVICES", {"cuda", "cpu"})
    with layers.watch_attention() as w:
        got = run()
    assert {c[4] for c in w.calls} == {16} | ({8} if name == "champion" else set())
    torch.testing.assert_close(got[0], ref[0])
    for a, b in zip(got[1], ref[1], strict=True):
        torch.testing.assert_close(a, b)
    assert (got[2] == ref[2]).all()
