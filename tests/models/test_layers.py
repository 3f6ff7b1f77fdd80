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
