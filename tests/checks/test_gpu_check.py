"""make gpu-check: it refuses cleanly without CUDA, and its pieces run on CPU at tiny sizes
(the same functions a GPU node runs), so the script cannot rot where CI has no GPU."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, TINY_MODELS

CHECKS = REPO / "checks"


@pytest.fixture(scope="module")
def gpu():
    """checks/ and benchmarks/ on the path, as the script puts them; its modules."""
    sys.path[:0] = [str(CHECKS), str(REPO / "benchmarks")]
    import gpu_env
    import gpu_sections
    import gpu_train

    return gpu_env, gpu_train, gpu_sections


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_refuses_without_cuda_in_one_line(tmp_path):
    out = tmp_path / "GPU_CHECK.md"
    res = subprocess.run(
        [sys.executable, str(CHECKS / "gpu_check.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("gpu-check: torch ") and "sees no CUDA device" in lines[0]
    assert not out.exists()  # nothing written


def test_environment_rows(gpu):
    env, _, _ = gpu
    rows = {r[1]: r for r in env.environment(torch.device("cpu"))}
    assert rows["torch"][2] == torch.__version__
    assert rows["device"][2] and rows["CPU cores"][2].isdigit()
    assert "CUBLAS_WORKSPACE_CONFIG" in rows


def test_matmul_peaks_and_the_mfu_reference(gpu):
    env, _, _ = gpu
    peaks = env.matmul_peaks(torch.device("cpu"), n=64, per_round=2, rounds=2)
    assert set(peaks) == {"fp16", "bf16", "fp32"}
    assert all(math.isfinite(v) and v > 0 for v in peaks.values())
    rows = {r[1]: r[2] for r in env.peak_rows(peaks, 64)}
    assert float(rows["MFU reference"]) == pytest.approx(
        max(peaks["fp16"], peaks["bf16"]) / 1e12, abs=0.006
    )


@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_a_step_under_each_precision(gpu, precision, tiny_cfg, tiny_data):
    """The throughput step is Lightning's: autocast, the grad scaler for 16-mixed only."""
    from arctax.data.collate import collate
    from arctax.data.dataset import load_split
    from arctax.models import build_model
    from arctax.settings import Trial69
    from arctax.training.optim import build_optimizer

    _, train, _ = gpu
    amp = train.Amp.of(precision, torch.device("cpu"))
    assert (amp.scaler is not None) == (precision == "16-mixed")
    torch.manual_seed(0)
    model = build_model("encoder_decoder", TINY_MODELS["encoder_decoder"])
    opt = build_optimizer(model.parameters(), Trial69.of(tiny_cfg))
    ds = load_split(tiny_data, "train")
    batch = collate([ds[i] for i in range(8)], model.fmt)
    before = [p.detach().clone() for p in model.parameters()]
    with amp.forward_context():
        assert model(batch).dtype == (amp.dtype or torch.float32)
    train.train_step(model, opt, batch, 1.0, amp)
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    if amp.scaler is not None:
        assert amp.scaler.get_scale() == 65536.0  # no overflow: the step was taken


def test_throughput_rows_for_every_precision(gpu, tiny_cfg, tiny_data):
    from arctax.data.dataset import load_split

    _, train, _ = gpu
    ds = load_split(tiny_data, "train")
    flag = torch.are_deterministic_algorithms_enabled()
    cpu, m = torch.device("cpu"), "encoder_decoder"  # every model: the whole-check test
    rows = {r[1]: r[2] for r in train.throughput(tiny_cfg, ds, cpu, 1, 1, 1e12, models=(m,))}
    for p in ("32-true", "16-mixed", "bf16-mixed"):
        assert float(rows[f"{m}, {p}: tokens/s"]) > 0
        assert 0 < float(rows[f"{m}, {p}: MFU"]) < 1
        assert "scaled_dot_product" in rows[f"{m}, {p}: attention"]
    assert rows[f"RATIO {m}: 16-mixed / 32-true"].endswith("x")
    assert torch.are_deterministic_algorithms_enabled() is flag  # restored afterwards


class _Noisy(torch.autograd.Function):
    gen = torch.Generator().manual_seed(3)

    @staticmethod
    def forward(ctx, x):
        return x + 1e-4 * torch.randn(x.shape, generator=_Noisy.gen, dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        return g


def test_repeatability_holds_and_catches_a_nondeterministic_op(
    gpu, tiny_cfg, tiny_data, tmp_path, monkeypatch
):
    _, train, _ = gpu
    row = train.repeatability(tiny_cfg, tiny_data, tmp_path / "a", 2, 1, ["encoder_decoder"])[0]
    assert row[2] == "yes" and row[3].startswith("identical"), row
    from arctax.models.layers import MLP

    forward = MLP.forward  # an op whose result changes run to run (unseeded noise)
    monkeypatch.setattr(MLP, "forward", lambda self, x: _Noisy.apply(forward(self, x)))
    row = train.repeatability(tiny_cfg, tiny_data, tmp_path / "b", 2, 1, ["encoder_decoder"])[0]
    assert row[2] == "NO" and "differ" in row[3], row


def test_a_failing_section_fails_the_check_and_the_rest_runs(gpu):
    _, _, sections = gpu

    def boom():
        raise RuntimeError("NCCL error: unhandled system error")

    bad = sections.run_section("ddp", boom)
    assert not bad.ok and bad.rows[0][2] == "FAIL" and "NCCL error" in bad.rows[0][3]
    good = sections.run_section("environment", lambda: [("environment", "x", "1", "")])
    text = sections.render(
        [good, bad], {"command": "c", "date": "d", "elapsed": "1 s", "device": "cpu"}
    )
    assert text.startswith("# arctax GPU check: FAIL") and "Failed sections: ddp." in text


def test_smoke_rows_carry_each_failure(gpu):
    _, _, sections = gpu
    report = {
        "models": {
            "champion": {"ok": False, "checks": {"runs": "out of GPU memory on the largest batch"}},
        }
    }
    rows = sections.smoke_rows(report)
    assert rows == [
        ("smoke", "champion: checks", "FAIL", "runs: out of GPU memory on the largest batch")
    ]
    assert not sections.Section("smoke", rows).ok


@pytest.mark.slow
@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_the_whole_check_runs_on_cpu_at_tiny_sizes(gpu, tmp_path):
    """Every section, end to end, as on a GPU node (DDP: two CPU processes over gloo)."""
    import gpu_check  # on the path through the gpu fixture

    out = tmp_path / "GPU_CHECK.md"
    assert gpu_check.main(["--cpu", "--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# arctax GPU check: PASS")
    for area in ("environment", "matmul", "smoke", "train", "repeat", "decode", "adapt", "ddp"):
        assert f"| {area}" in text, area
    assert "| ddp | backend | gloo |" in text
    assert "| repeat | champion: two trainings bitwise equal | yes |" in text
