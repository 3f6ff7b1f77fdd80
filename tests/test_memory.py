"""The memory estimate (arctax.memory), checked against counts made by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from arctax.memory import PeakMemory, largest_batch, largest_grid, step_batch, train_step
from arctax.settings import Settings, load_settings

F32, MASK = 4, 1  # bytes: activations of 32-true, a dropout mask (CUDA keeps it boolean)


def pad8(x: int) -> int:
    return x + (-x % 8)


def lse(n: int, h: int, t: int) -> int:
    """The memory-efficient kernel's saved log-sum-exp: fp32, queries rounded up to 32."""
    return n * h * (-(-t // 32) * 32) * F32


def ln(n: int, t: int, d: int) -> int:
    """A LayerNorm keeps its input and two fp32 statistics per row."""
    return n * t * d * F32 + 2 * n * t * F32


def attention(n, t, s, d, h, bias: bool, kv_from_mem: bool = False) -> int:
    """Saved by one attention sub-layer (LayerNorm in, its output for the projections, the
    padded q, k, v and output, the log-sum-exp, the mask as an additive bias, the merged
    heads for the output projection); k, v of a memory come from the memory (counted once)."""
    hp = pad8(d // h)
    out = ln(n, t, d) + n * t * d * F32  # LayerNorm input and output
    out += n * t * h * hp * F32 * 2 + n * s * h * hp * F32 * 2  # q, output; k, v
    out += lse(n, h, t) + (n * s * F32 if bias else 0) + n * t * d * F32  # merged heads
    return out


def mlp(n, t, d, ff) -> int:
    """LayerNorm in and out, GELU's input and output."""
    return ln(n, t, d) + n * t * d * F32 + 2 * n * t * ff * F32


def drop(n, t, d, p) -> int:
    return n * t * d * MASK if p > 0 else 0


def block(n, t, d, h, ff, p, bias: bool, cross_s: int | None = None) -> int:
    """A pre-norm block: self-attention, optional cross-attention over ``cross_s`` keys, MLP,
    each followed by dropout."""
    out = attention(n, t, t, d, h, bias) + drop(n, t, d, p)
    if cross_s is not None:
        out += attention(n, t, cross_s, d, h, True) + drop(n, t, d, p)
    return out + mlp(n, t, d, ff) + drop(n, t, d, p)


def head(n, t, d, v: int = 15) -> int:
    """The final LayerNorm (in, out), the logits' log-softmax."""
    return ln(n, t, d) + n * t * d * F32 + n * t * v * F32


def analytic_train_bytes(name: str, cfg: Settings, batch: dict) -> int:
    """A 32-true training step's peak, counted by hand: weights and Adam's two moments, the
    batch, and every activation the backward keeps (full size, every grid the largest)."""
    m = cfg.models[name].config()
    n = cfg.trial69.batch_size
    h_, w_ = largest_grid(cfg.data)
    g = h_ * (w_ + 1) + 1  # tokens of one grid
    d, h, ff = m["d_model"], m["n_heads"], m["d_ff"]
    from arctax.models import build_model

    params = sum(p.numel() for p in build_model(name, m).parameters())
    total = 3 * params * F32 + sum(v.numel() * v.element_size() for v in batch.values())
    if name == "decoder_only":
        t, p = 2 * g, m["dropout"]
        total += drop(n, t, d, p) + m["n_layers"] * block(n, t, d, h, ff, p, False)
        return total + head(n, t, d)
    enc_p = m.get("encoder_dropout", m.get("dropout"))
    dec_p = m.get("decoder_dropout", m.get("dropout"))
    s = t = g
    total += drop(n, s, d, dec_p) + block(n, s, d, h, ff, enc_p, True)  # source, encoder
    total += ln(n, s, d) + n * s * d * F32  # the encoder's LayerNorm; its output, the memory
    total += drop(n, t, d, dec_p)  # target embedding
    total += m["n_decoder_layers"] * block(n, t, d, h, ff, dec_p, False, cross_s=s)
    total += head(n, t, d)
    if name == "champion":
        dc, hc, k = m["context"]["d_model"], m["context"]["n_heads"], cfg.data.context_pairs
        grids = n * k * 2
        total += block(grids, g, dc, hc, 4 * dc, 0.0, True)  # one block over every grid
        pairs = n * k  # output grids attend to input grids
        total += grids * g * dc * F32  # the kv projection's contiguous copy of the input grids
        total += attention(pairs, g, g, dc, hc, True) - ln(pairs, g, dc)  # its input: the block's
        total += pairs * g * dc * F32 + pairs * g * F32  # masked mean: the output and the mask
        bridge = n * t * (d + dc) * F32 + ln(n, t, d)  # concatenation; ReLU out = LN in
        total += m["n_decoder_layers"] * bridge
    return total


@pytest.mark.parametrize("name", ["champion", "encoder_decoder", "decoder_only"])
def test_train_estimate_matches_a_count_by_hand(name):
    """On meta, the estimated peak of each full-size model's largest training batch is within
    10% of the count above (the rest: the backward's transient gradients)."""
    cfg = load_settings()
    est = train_step(cfg.models[name], cfg.data, step_batch(cfg), "32-true")
    batch = largest_batch(
        cfg.data,
        {"decoder_only": "decoder_only", "champion": "champion"}.get(name, "seq2seq"),
        cfg.trial69.batch_size,
    )
    want = analytic_train_bytes(name, cfg, batch)
    print(f"\n{name}: estimate {est.peak_bytes / 2**30:.3f} GiB, by hand {want / 2**30:.3f} GiB")
    assert abs(est.peak_bytes / want - 1) < 0.10


def test_peak_memory_counts_live_storages_as_the_cuda_allocator_does():
    """Blocks rounded up to 512 bytes; a view adds nothing; a freed tensor leaves the count;
    the peak stays."""
    mem = PeakMemory()
    with mem:
        a = torch.empty(1000, device="meta")  # 4000 bytes -> 4096
        v = a[:10]
        b = torch.empty(10, device="meta")  # 40 bytes -> 512
        assert mem.live == 4096 + 512
        del a, v
        assert mem.live == 512 and b.numel() == 10
    assert mem.peak == 4096 + 512


@pytest.mark.parametrize("name", ["encoder_decoder", "decoder_only"])
def test_cuda_casts_on_meta_follow_autocast(name, arc1):
    """``AsOnCuda(bfloat16)`` on meta gives every module the output dtype real autocast gives
    it (CPU autocast here: the same policy as CUDA's for the ops these models use)."""
    from arctax.data.collate import MODEL_FORMAT, collate
    from arctax.memory import AsOnCuda
    from arctax.models import build_model
    from tests.conftest import TINY_MODELS, make_example

    def dtypes(model, batch, ctx):
        seen = {}
        hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.dtype))
                 for n, m in model.named_modules() if n]  # fmt: skip
        with ctx:
            model(batch)
        for h in hooks:
            h.remove()
        return seen

    torch.manual_seed(0)
    model = build_model(name, TINY_MODELS[name]).train()
    batch = collate([make_example(list(arc1[0])[i], idx=i) for i in (0, 1)], MODEL_FORMAT[name])
    real = dtypes(model, batch, torch.autocast("cpu", dtype=torch.bfloat16))
    model.to("meta")
    meta = dtypes(model, {k: v.to("meta") for k, v in batch.items()}, AsOnCuda(torch.bfloat16))
    assert real == meta
    assert {str(d) for d in real.values()} == {"torch.float32", "torch.bfloat16"}


def test_every_job_is_estimated(tiny_cfg):
    """Train, evaluate, adapt of every model and the sweep's largest point, each above the
    weights it holds; the table says which card each fits."""
    from arctax.memory import estimate_jobs, format_table

    cfg = tiny_cfg.with_overrides({"eval": {"max_new_tokens": 6}})
    sweep = {"champion": cfg.with_overrides({"trial69": {"batch_size": 64}})}
    rows = estimate_jobs(cfg, "16-mixed", sweep)
    assert [(r.model, r.job) for r in rows] == [
        (m, j) for m in ("champion", "encoder_decoder", "decoder_only")
        for j in ("train", "evaluate", "adapt")
    ] + [("champion", "sweep")]  # fmt: skip
    assert all(r.peak_bytes > r.weights_bytes > 0 for r in rows)
    by = {(r.model, r.job): r for r in rows}
    assert by["champion", "sweep"].peak_bytes > by["champion", "train"].peak_bytes
    assert by["champion", "sweep"].batch == 64
    text = format_table(rows, card_bytes=2**30)
    assert text.count("| yes |") == len(rows)
    assert "NO" in format_table(rows, card_bytes=2**20)


def test_the_memory_command_fails_when_a_job_does_not_fit(tmp_path, capsys):
    """``arctax memory --gpu-memory`` prints the table and exits 1 naming the job and the fix."""
    import yaml

    from arctax.cli import main
    from tests.conftest import tiny_overrides

    over = tmp_path / "tiny.yaml"
    over.write_text(yaml.safe_dump({**tiny_overrides(), "eval": {"max_new_tokens": 4}}))
    args = ["--config", str(over), "memory", "--jobs", "train,evaluate"]
    assert main([*args, "--gpu-memory", "64"]) == 0
    assert main([*args, "--gpu-memory", "0.001"]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT 0 GiB: champion train" in out and "trainer.devices: 2" in out
    assert "| champion | adapt |" not in out


def test_a_model_of_ones_own_is_estimated_or_says_why(tmp_path):
    """A class of one's own is estimated like the built-ins (decoded by ``forward`` when it has
    no cache); one that reads its data (nothing to read on meta) gets a row saying so."""
    from arctax.memory import estimate_jobs
    from tests.conftest import tiny_overrides
    from tests.models.own_models import write

    path = write(tmp_path)
    Path(path).write_text(Path(path).read_text() + READS)
    over = tiny_overrides()
    over["models"] = {"mine": {"class": f"{path}:Tiny"}, "reads": {"class": f"{path}:Reads"}}
    over["eval"] = {"max_new_tokens": 4}
    rows = estimate_jobs(load_settings(overrides=over), "32-true", jobs=("train", "evaluate"))
    by = {(r.model, r.job): r for r in rows}
    assert by["mine", "train"].peak_bytes > 0 and by["mine", "evaluate"].peak_bytes > 0
    bad = by["reads", "train"]
    assert bad.peak_bytes == -1 and "not estimated on meta" in bad.what and "item" in bad.what


READS = """

class Reads(Tiny):
    def forward(self, batch):
        if int(batch["src_mask"].sum()) == 0:  # reads its data: nothing to read on meta
            raise ValueError("empty batch")
        return super().forward(batch)
"""


def test_under_ddp_a_gpu_holds_its_share_of_the_batch(tiny_cfg):
    """``trainer.devices: 2``: each GPU's step holds half the global batch, and less memory."""

    def step(s):
        return train_step(s.models["encoder_decoder"], s.data, step_batch(s), "32-true")

    one = step(tiny_cfg)
    two = step(tiny_cfg.with_overrides({"trainer": {"devices": 2}}))
    assert (one.batch, two.batch) == (32, 16) and two.peak_bytes < one.peak_bytes
