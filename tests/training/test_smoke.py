"""Smoke test: the training path for each model, every check and figure, and each check
failing on a constructed fault (a non-finite gradient, a checkpoint that reloads differently,
a KV-cache decode that differs, gradients that differ between identical steps, an op without
a deterministic kernel, out of memory, a frozen optimizer, a non-finite loss, a parameter the
loss ignores)."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from arctax.training import smoke_checks
from arctax.training.smoke import format_table, merge_reports, smoke_test
from arctax.training.smoke_checks import Step, bitwise_equal, judge_steps
from tests.conftest import REPO, tiny_overrides

CPU_CHECKS = {
    "finite_loss",
    "finite_grads",
    "nonzero_grads",
    "step_changes_weights",
    "checkpoint_reload",
    "protocol",
    "kv_cache_decode",
    "identical_steps",
    "trial69_recipe",
    "fused_attention",
}
FAST = "encoder_decoder"  # the quickest tiny model, for the fault runs


@pytest.fixture(scope="module")
def report(tiny_cfg, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "smoke.json"
    rep = smoke_test(tiny_cfg, tiny_data, out)
    assert json.loads(out.read_text()) == rep
    return rep


def test_every_model_passes_every_check(report, tiny_cfg):
    assert report["ok"], format_table(report)
    assert list(report["models"]) == list(tiny_cfg.models)  # the config's models
    for r in report["models"].values():
        assert set(r["checks"]) == CPU_CHECKS  # no grad scaler without 16-mixed: no grad_scale
        assert r["parameters"] > 0


def test_figures_of_each_model(report):
    for name, r in report["models"].items():
        f = r["figures"]
        assert f["accelerator"] == "cpu" and f["devices"] == 1, name
        assert f["device"] and f["precision"] == "32-true"
        assert "16-mixed needs a GPU" in f["precision_note"]  # the reason, not just the value
        assert f["deterministic"] is True  # trial69.deterministic, as the train job runs it
        assert f["peak_memory_bytes"] > 0 and "VmHWM" in f["peak_memory_method"]
        assert set(f["step_seconds"]) == {"largest", "normal"}
        assert all(s > 0 for s in f["step_seconds"].values())
        big, normal = f["batches"]["largest"], f["batches"]["normal"]
        assert big["samples"] == normal["samples"] == 32
        assert big["padded_tokens"] >= normal["padded_tokens"] > 0
        assert [s["batch"] for s in f["steps"]] == ["largest", "normal"] * 2
        assert all(s["loss"] > 0 and not s["nonfinite_grads"] for s in f["steps"])
        # every call site with its kernel: on CPU the fused one, math where dropout is on
        assert f["attention"] and set(f["attention"].values()) <= {"flash", "math", "flash/math"}
        assert all(site.split(":")[0].endswith(".py") for site in f["attention"])
    assert report["card"] is None  # no GPU: nothing for train to compare
    text = format_table(report)
    assert "deterministic True" in text and "peak" in text and "FAIL" not in text


def test_the_largest_batch_is_the_most_padded_of_the_split(tiny_data):
    """No batch of the epoch's sampler has more tokens than the one the smoke picks."""
    from arctax.data.collate import collate
    from arctax.data.datamodule import LengthGroupedBatchSampler
    from arctax.data.dataset import load_split
    from arctax.training.smoke import batch_tokens, pick_batches

    ds = load_split(tiny_data, "train")
    for fmt in ("seq2seq", "champion", "decoder_only"):
        picked = batch_tokens(collate([ds[i] for i in pick_batches(ds, fmt, 32)["largest"]], fmt))
        for epoch in range(2):
            sampler = LengthGroupedBatchSampler(ds.lengths(fmt), 32, seed=0)
            sampler.set_epoch(epoch)
            for b in sampler.batches():
                tokens = batch_tokens(collate([ds[i] for i in b], fmt))["padded_tokens"]
                assert tokens <= picked["padded_tokens"], fmt


def _one(cfg, data, tmp_path, model=FAST):
    rep = smoke_test(cfg, data, tmp_path / "s.json", [model])
    assert not rep["ok"]
    return rep["models"][model]


class _NaNGrad(torch.autograd.Function):
    """Identity forward, NaN gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("nan"))


def test_a_non_finite_gradient_fails(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    from arctax.models.layers import MLP

    forward = MLP.forward
    monkeypatch.setattr(MLP, "forward", lambda self, x: _NaNGrad.apply(forward(self, x)))
    r = _one(tiny_cfg, tiny_data, tmp_path)
    assert r["checks"]["finite_grads"].startswith("non-finite gradients at step 1 (largest batch")
    assert any(".mlp." in n for n in r["figures"]["steps"][0]["nonfinite_grads"])
    assert "FAIL encoder_decoder / finite_grads" in format_table({"models": {FAST: r}})


def test_a_non_finite_loss_fails(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    from arctax.models.encoder_decoder import EncoderDecoder

    forward = EncoderDecoder.forward  # logits that overflow (as an fp16 activation would)
    monkeypatch.setattr(EncoderDecoder, "forward", lambda self, b: forward(self, b) * float("inf"))
    r = _one(tiny_cfg, tiny_data, tmp_path)
    assert r["checks"]["finite_loss"].startswith("loss is nan at step 1 (largest batch)")


def test_a_parameter_the_loss_ignores_fails(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    from arctax.models.layers import MLP

    forward = MLP.forward  # the MLPs' output multiplied by 0: their weights get zero gradients
    monkeypatch.setattr(MLP, "forward", lambda self, x: forward(self, x) * 0.0)
    r = _one(tiny_cfg, tiny_data, tmp_path)
    msg = r["checks"]["nonzero_grads"]
    assert msg.startswith("all-zero gradient at every step: ") and ".mlp.net.0.weight" in msg


def test_a_checkpoint_that_reloads_differently_fails(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    """A fault of the kind that bites: state outside the state_dict (here a random position
    table, non-persistent), so a model rebuilt from its checkpoint computes other logits."""
    import arctax.models.grid2d_pe as pe

    monkeypatch.setattr(pe, "sinusoid_table", lambda n, d: torch.randn(n, d))
    r = _one(tiny_cfg, tiny_data, tmp_path)
    assert r["checks"]["checkpoint_reload"].startswith("logits of the reloaded last.ckpt differ")
    others = {k: v for k, v in r["checks"].items() if k != "checkpoint_reload"}
    assert set(others.values()) == {"ok"}  # the fault shows where it is, and only there


def test_a_kv_cache_decode_mismatch_fails(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    from arctax.models.encoder_decoder import EncoderDecoder

    step = EncoderDecoder.step

    def wrong_step(self, cache, token, pos):  # the cached path favours colour 1
        logits = step(self, cache, token, pos)
        logits[:, 1] += 50.0
        return logits

    monkeypatch.setattr(EncoderDecoder, "step", wrong_step)
    r = _one(tiny_cfg, tiny_data, tmp_path)
    assert r["checks"]["kv_cache_decode"].startswith("KV-cache decoding differs from the naive")
    assert "cache 1 vs naive" in r["checks"]["kv_cache_decode"]


class _NoisyGrad(torch.autograd.Function):
    """Identity forward; backward adds noise from a generator no seed resets (an op whose
    result depends on the order of its atomic adds behaves like this)."""

    gen = torch.Generator().manual_seed(1)

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g + 1e-6 * torch.randn(g.shape, generator=_NoisyGrad.gen, dtype=g.dtype)


def test_gradients_that_differ_between_identical_steps_fail(
    tiny_cfg, tiny_data, tmp_path, monkeypatch
):
    from arctax.models.layers import MLP

    forward = MLP.forward
    monkeypatch.setattr(MLP, "forward", lambda self, x: _NoisyGrad.apply(forward(self, x)))
    r = _one(tiny_cfg, tiny_data, tmp_path)
    assert "gradients differ between two identical steps" in r["checks"]["identical_steps"]


def test_an_op_without_a_deterministic_kernel_is_named_with_the_fix(
    tiny_cfg, tiny_data, tmp_path, monkeypatch
):
    """``put_`` raises under torch.use_deterministic_algorithms on every device (its docs):
    a real torch error, raised because the smoke runs with the Trainer's deterministic flag."""
    from arctax.models.layers import MLP

    forward = MLP.forward

    def put(self, x):
        x.new_zeros(3).put_(torch.tensor([0]), x.new_ones(1))
        return forward(self, x)

    monkeypatch.setattr(MLP, "forward", put)
    msg = _one(tiny_cfg, tiny_data, tmp_path)["checks"]["runs"]
    assert msg.startswith("op put_ has no deterministic implementation")
    assert "fix:" in msg and "trial69.deterministic" in msg
    assert "(at models/layers.py:" in msg


def test_out_of_memory_names_the_batch_and_the_fix(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    from arctax.models.layers import MLP

    def oom(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(MLP, "forward", oom)
    msg = _one(tiny_cfg, tiny_data, tmp_path)["checks"]["runs"]
    assert msg.startswith("out of GPU memory on the largest batch (32 samples, ")
    assert "trainer.devices" in msg
    assert "(at models/layers.py:" in msg  # where in the model code: the call that failed


def test_a_step_that_changes_nothing_fails(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    import arctax.training.module as module

    monkeypatch.setattr(
        module, "build_optimizer", lambda params, t69: torch.optim.Adam(params, 0.0)
    )
    checks = _one(tiny_cfg, tiny_data, tmp_path)["checks"]
    unchanged, _, total = checks["step_changes_weights"].split()[:3]
    assert unchanged == total and "parameters unchanged" in checks["step_changes_weights"]
    assert checks["trial69_recipe"].startswith(
        "optimizer.lr: built 0.0, the config's trial69 says 0.0018498849832733245"
    )


def _steps(*grads_ok: bool, scales=None) -> list[Step]:
    steps = []
    for i, ok in enumerate(grads_ok):
        s = Step("largest" if i % 2 == 0 else "normal", loss=2.0)
        s.nonfinite_grads = [] if ok else ["head.weight"]
        if scales is not None:
            s.scale = scales[i]
            s.skipped = not ok
        steps.append(s)
    return steps


def test_the_grad_scaler_may_skip_early_steps_but_not_the_last():
    """16-mixed runs only on CUDA, so its verdicts are checked here on recorded steps."""
    settle = _steps(False, True, True, True, scales=[65536.0, 32768.0, 32768.0, 32768.0])
    assert set(judge_steps(settle, "16-mixed", has_scaler=True).values()) == {"ok"}
    late = judge_steps(
        _steps(True, True, True, False, scales=[65536.0] * 4), "16-mixed", has_scaler=True
    )
    assert late["finite_grads"].startswith("non-finite gradients at step 4 (normal batch)")
    assert "fp16 overflow" in late["finite_grads"]
    collapse = judge_steps(
        _steps(False, False, False, False, scales=[2.0, 1.0, 0.5, 0.25]), "16-mixed", True
    )
    assert "(largest batch; at every step)" in collapse["finite_grads"]
    assert collapse["grad_scale"].startswith("grad scaler scale fell to 0.25 (4 of 4 steps")
    # without a scaler one bad step is a failure, and there is no grad_scale check
    plain = judge_steps(_steps(False, True, True, True), "32-true", has_scaler=False)
    assert plain["finite_grads"].startswith("non-finite gradients at step 1")
    assert "grad_scale" not in plain and "fp16" not in plain["finite_grads"]
    nan_loss = _steps(True, True)
    nan_loss[1].loss = float("nan")
    assert judge_steps(nan_loss, "16-mixed", True)["finite_loss"].startswith(
        "loss is nan at step 2 (normal batch); under 16-mixed that is an fp16 overflow"
    )


def test_bitwise_equal_tells_nan_payloads_and_signed_zeros_apart():
    a = torch.tensor([0.0, float("nan"), 1.0])
    assert bitwise_equal(a, a.clone()) and not torch.equal(a, a.clone())
    assert not bitwise_equal(torch.tensor([0.0]), torch.tensor([-0.0]))
    assert not bitwise_equal(a, a.double())
    assert smoke_checks.explain(ValueError("bad")) == "ValueError: bad"


def test_cli_table_records_a_recipe_override_and_refuses_bad_config(tiny_data, tmp_path):
    overlay = tmp_path / "tiny.yaml"
    overlay.write_text(yaml.safe_dump(tiny_overrides()))
    cmd = [
        sys.executable,
        "-m",
        "arctax.cli",
        "--config",
        str(REPO / "config" / "config.yaml"),
        "--config",
        str(overlay),
        "--set",
        "trial69.optimizer.lr=0.1",
        "smoke",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "s.json"),
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    # an override of the recipe (a search's best.yaml) is a recorded deviation, not a failure
    assert res.returncode == 0, res.stdout + res.stderr
    assert "champion: deviates from Trial 69: optimizer.lr: 0.1 (Trial 69: 0.00184988" in res.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "arctax.cli",
            "--set",
            "trial69.bogus=1",
            "smoke",
            "--data",
            "x",
            "--out",
            "y",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "trial69" in bad.stderr and "bogus" in bad.stderr


@pytest.mark.slow
def test_two_processes_smoke_as_the_train_job_would_run(tiny_data, tmp_path):
    """trainer.devices: 2 without CUDA: two CPU processes over gloo, Lightning's launcher
    re-running the command for rank 1, exactly as the train job; rank 0 alone writes."""
    overlay = tmp_path / "tiny.yaml"
    overlay.write_text(yaml.safe_dump(tiny_overrides(devices=2)))
    out = tmp_path / "s.json"
    cmd = [sys.executable, "-m", "arctax.cli", "--config", str(REPO / "config" / "config.yaml")]
    cmd += ["--config", str(overlay), "smoke", "--data", str(tiny_data), "--out", str(out)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"], format_table(report)
    for r in report["models"].values():
        assert r["figures"]["devices"] == 2 and r["figures"]["process_group_backend"] == "gloo"
        assert r["figures"]["batches"]["largest"]["samples"] == 32  # the global batch, 16 + 16
    assert res.stdout.count("checkpoint_reload") == 1  # rank 1 prints its table without it
    assert "other ranks exited (0)" in res.stdout + res.stderr


def test_the_protocol_check_names_what_a_model_lacks(tiny_data):
    """A model of one's own whose forward is not aligned with the labels, or lacks cached
    decoding without declaring the fallback (docs/MODELS.md)."""
    from torch import nn

    from arctax.data.collate import collate
    from arctax.data.dataset import load_split
    from arctax.training.smoke_checks import OK, protocol_check

    ds = load_split(tiny_data, "train")
    batch = collate([ds[i] for i in range(3)], "seq2seq")

    class Short(nn.Module):
        fmt = "seq2seq"
        supports_cache = False

        def forward(self, b):
            return torch.zeros(*b["labels"].shape[:1], 5, 15)

    class NoCache(Short):
        supports_cache = True

        def forward(self, b):
            return torch.zeros(*b["labels"].shape, 15)

    msg = protocol_check(Short(), batch)
    assert msg.startswith(
        f"forward(batch) gave (3, 5, 15), expected logits (3, {batch['labels'].shape[1]}, 15)"
    )
    assert "no start / step for cached decoding" in protocol_check(NoCache(), batch)
    assert protocol_check(type("Fine", (Short,), {"forward": NoCache.forward})(), batch) == OK


def test_the_merged_report_gives_parameters_and_flags_a_model_off_the_champions_size(tmp_path):
    def part(name, n):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps({"models": {name: {"ok": True, "checks": {"finite_loss": "ok"},
                                                   "figures": {}, "parameters": n}}}))  # fmt: skip
        return p

    sizes = {"champion": 1_000_000, "grid2d": 1_040_000, "decoder_only": 900_000}
    out = tmp_path / "report.json"
    report = merge_reports([part(m, n) for m, n in sizes.items()], out)
    assert report["ok"] and set(report["size_flags"]) == {"decoder_only"}
    assert json.loads(out.read_text()) == report
    text = format_table(report)
    assert "grid2d 1,040,000 (+4.0% vs champion)" in text
    assert "FLAG decoder_only is not size-matched: 900,000 parameters, -10.0%" in text
    assert "FLAG grid2d" not in text and "FAIL" not in text


def test_a_math_kernel_call_fails_the_smoke_test_naming_its_site(tiny_cfg, tiny_data, tmp_path,
                                                                monkeypatch):  # fmt: skip
    """Where the math kernel is forbidden (CUDA; the CPU here, where dropout sends the encoder's
    attention to it), the training path fails with the call site and its shapes."""
    import functools

    from arctax.models import layers
    from arctax.training import smoke

    monkeypatch.setattr(smoke, "watch_attention",
                        functools.partial(layers.watch_attention, forbid_math=("cpu",)))  # fmt: skip
    r = _one(tiny_cfg, tiny_data, tmp_path)
    msg = r["checks"]["runs"]
    assert "would run the math kernel on cpu" in msg and "encoder_decoder.py:" in msg
    assert "self-attention, key mask" in msg and "dropout 0.1" in msg
