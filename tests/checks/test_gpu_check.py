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
    from arctax.training.optim import build_optimizer

    _, train, _ = gpu
    amp = train.Amp.of(precision, torch.device("cpu"))
    assert (amp.scaler is not None) == (precision == "16-mixed")
    torch.manual_seed(0)
    model = build_model("encoder_decoder", TINY_MODELS["encoder_decoder"])
    opt = build_optimizer(model.parameters(), tiny_cfg.trial69)
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
    assert rows[f"RATIO {m}: 16-mixed / 32-true"].endswith("x")
    assert torch.are_deterministic_algorithms_enabled() is flag  # restored afterwards


def test_attention_rows_name_every_call_site_per_job(gpu, tiny_cfg, tiny_data):
    """One row per model, job and call site with its kernel; on CPU dropout sends training's
    calls to math (fine there), evaluation and adaptation's eval-mode fit stay fused."""
    from arctax.data.dataset import load_split

    _, train, _ = gpu
    flag = torch.are_deterministic_algorithms_enabled()
    rows = train.attention_rows(tiny_cfg, load_split(tiny_data, "train"), torch.device("cpu"),
                                n=4, models=("encoder_decoder",))  # fmt: skip
    by_job: dict[str, dict[str, str]] = {}
    for _, name, kernels, _ in rows:
        head, site = name.split(": ", 1)
        by_job.setdefault(head.removeprefix("encoder_decoder, "), {})[site] = kernels
    assert set(by_job) == {"train 32-true", "train 16-mixed", "train bf16-mixed",
                           "adapt fit 32-true", "evaluate 32-true"}  # fmt: skip
    assert len(by_job["train 32-true"]) == 3  # encoder self; decoder self, cross (each layer)
    assert "math" in by_job["train 32-true"].values()  # dropout: CPU's fused kernel refuses
    assert set(by_job["adapt fit 32-true"].values()) == {"flash"}
    assert set(by_job["evaluate 32-true"].values()) == {"flash"}
    assert any("cached" in site for site in by_job["evaluate 32-true"])
    assert all(k != "FAIL" for _, _, k, _ in rows)  # math is no failure on the CPU
    assert torch.are_deterministic_algorithms_enabled() is flag


def test_a_math_site_on_cuda_is_a_failure(gpu):
    """The verdict the rows use: math on CUDA fails, on the CPU it is how dropout runs."""
    from arctax.training.smoke_checks import math_sites

    sites = {"a.py:1 f, self-attention, key mask": "math", "a.py:2 g, cross-attention": "flash"}
    assert math_sites(sites, "cuda") == ["a.py:1 f, self-attention, key mask"]
    assert math_sites(sites, "cpu") == []
    _, _, sections = gpu
    fig = {"device": "GPU", "device_memory_bytes": 2**34, "peak_memory_bytes": 2**30,
           "peak_memory_method": "m", "precision": "16-mixed", "deterministic": True,
           "batches": {"largest": {"samples": 32, "padded_tokens": 9}},
           "step_seconds": {"largest": 0.1}, "attention": sites}  # fmt: skip
    rows = sections.smoke_rows({"models": {"champion": {"checks": {"runs": "ok"}, "figures": fig}}})
    att = {r[1]: r[2] for r in rows if "attention" in r[1]}
    assert att == {"champion: attention a.py:1 f, self-attention, key mask": "FAIL",
                   "champion: attention a.py:2 g, cross-attention": "flash"}  # fmt: skip
    assert not sections.Section("smoke", rows).ok


def test_memory_rows_estimate_every_job(gpu, tiny_cfg):
    """Every model's train / evaluate / adapt and the sweep's largest point, in GiB."""
    _, _, sections = gpu
    cfg = tiny_cfg.with_overrides({"eval": {"max_new_tokens": 4}})
    rows = sections.memory_rows(cfg, torch.device("cpu"))
    names = [r[1].split(" (")[0] for r in rows]
    assert names == [f"{m} {j}" for m in ("champion", "encoder_decoder", "decoder_only")
                     for j in ("train", "evaluate", "adapt")] + ["champion sweep"]  # fmt: skip
    assert all(float(r[2]) > 0 and "estimated on meta" in r[3] for r in rows)
    assert "batch 64" in rows[-1][1]  # the sweep's largest batch size (config/config.yaml)


def test_a_memory_measurement_runs_the_estimated_step(tiny_cfg):
    """The real step beside the estimate runs on any device (a figure only on CUDA)."""
    from arctax.memory import measure_train_step

    m, d = tiny_cfg.models["encoder_decoder"], tiny_cfg.data
    got = measure_train_step(m, d, tiny_cfg.trial69.batch_size, "bf16-mixed", torch.device("cpu"))
    assert got is None


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
    for area in ("environment", "matmul", "smoke", "attention", "memory", "train", "repeat",
                 "decode", "adapt", "ddp"):  # fmt: skip
        assert f"| {area}" in text, area
    assert "| ddp | backend | gloo |" in text
    assert "| repeat | champion: two trainings bitwise equal | yes |" in text
