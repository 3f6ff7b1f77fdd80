"""The benchmark runs end to end in --quick mode and reports every figure (no timing limits)."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("arctax_bench", REPO / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["arctax_bench"] = module
    spec.loader.exec_module(module)
    return module


def _rows(text: str) -> dict[str, str]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("area", "---"):
            rows[f"{cells[0]} | {cells[1]}"] = cells[2]
    return rows


def _number(value: str) -> float:
    return float(re.match(r"[-+0-9.e]+", value).group())


@pytest.mark.slow
@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_quick_benchmark_reports_every_figure(bench, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    text = bench.main(["--quick", "--out", str(out), "--threads", "1"])
    assert out.read_text() == text
    assert "Load average" in text and "python benchmarks/bench.py --quick" in text
    rows = _rows(text)
    for model in (*bench.MODELS, "baseline nn.Transformer, random batches"):
        for what in ("samples/s", "tokens/s", "FLOPs/sample", "achieved", "MFU"):
            assert _number(rows[f"train cpu | {model}: {what}"]) > 0, (model, what)
        assert 0 < _number(rows[f"train cpu | {model}: real-token fraction"]) <= 1
    for model in bench.MODELS:
        for mode in ("KV cache", "no cache"):
            assert _number(rows[f"decode cpu | {model}: test pairs/s, {mode}"]) > 0
    assert _number(rows["train cpu | champion, bf16-mixed: tokens/s"]) > 0
    assert _number(rows["train cpu | RATIO tokens/s champion bf16-mixed / 32-true"]) > 0
    ratio = rows["train cpu | RATIO tokens/s encoder_decoder (grouped) / baseline"]
    assert math.isfinite(_number(ratio)) and ratio.endswith("x")
    grouped, random = rows[
        "data | real-token fraction seq2seq/champion, whole train epoch: grouped / random"
    ].split(" / ")
    assert 0 < float(random) < float(grouped) <= 1  # grouping must pack tighter than random
    assert "800 ARC-AGI-1 tasks" in text
    for variant in ("1 task per batch", "4 tasks per batch", "voting alone (0 steps)"):
        assert _number(rows[f"adapt cpu, quick size | tasks/s, {variant}"]) > 0, variant
    assert rows["adapt cpu, quick size | RATIO tasks/s 4 tasks per batch / 1"].endswith("x")
    jobs = next(k for k in rows if "3 models x 10 seeds" in k)
    assert int(re.search(r"\((\d+) jobs\)", jobs).group(1)) >= 60  # 30 train + 30 evaluate
    assert _number(rows["workflow | snakemake all -n, demo, everything up to date"]) > 0


def test_fixed_length_decoding_masks_eos(bench):
    """The decoding benchmark's wrapper really forces the full step count on both loops."""
    import torch

    from arctax.data.collate import collate
    from arctax.data.tokenize import EOS
    from arctax.evaluation.decode import greedy_decode
    from arctax.models import build_model

    torch.manual_seed(0)
    model = bench.FixedLength(build_model("encoder_decoder", bench.QUICK_MODELS["encoder_decoder"]))
    grid = torch.zeros(2, 2, dtype=torch.long).numpy()
    ex = {"query_in": grid, "query_out": grid, "context": [], "task_idx": 0, "example_idx": 0}
    batch = collate([ex, ex], "seq2seq")
    assert (model(batch)[..., EOS] == float("-inf")).all()
    for cache in (True, False):
        _, steps = greedy_decode(model, batch, 7, use_cache=cache)
        assert (steps == 7).all()


def test_causal_attention_counts_the_flops_it_computes(bench):
    """MFU's FLOPs: a decoder-only model's causal attention counts its lower triangle (what
    flash computes), the rest of the step in full: the count is the full count less the
    upper triangle's share of the attention matmuls, to the FLOP."""
    import numpy as np
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from arctax.data.collate import collate
    from arctax.models import build_model
    from arctax.training.module import answer_metrics

    count_flops = sys.modules["bench_train"].count_flops
    cfg = {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64}
    g = np.zeros((3, 4), dtype=np.int64)  # 16 tokens a grid: T = 32
    batch = collate([{"query_in": g, "query_out": g, "context": [], "task_idx": 0,
                      "example_idx": 0}] * 2, "decoder_only")  # fmt: skip
    with torch.device("meta"):
        model = build_model("decoder_only", cfg)
    full = FlopCounterMode(display=False)
    with full, sdpa_kernel(SDPBackend.MATH):
        mb = {k: v.to("meta") for k, v in batch.items()}
        answer_metrics(model(mb), mb["labels"])["loss"].backward()
    t, b, h, d = batch["seq"].shape[1], 2, 4, 8
    upper = 12 * b * h * t * t * d * (t - 1) / (2 * t)  # per layer
    got = count_flops(lambda: build_model("decoder_only", cfg), [batch])
    assert got == full.get_total_flops() - 2 * upper


@pytest.fixture(scope="module")
def epoch_estimate(bench):
    path = REPO / "benchmarks" / "epoch_estimate.py"
    spec = importlib.util.spec_from_file_location("arctax_epoch_estimate", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["arctax_epoch_estimate"] = module
    spec.loader.exec_module(module)
    return module


def test_strata_cover_every_batch_once(epoch_estimate):
    import numpy as np

    batches = [[i] for i in range(10)]
    padded = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 10])
    picks = epoch_estimate.strata(batches, padded, 3)
    assert sum(w for _, w in picks) == 10
    # each pick is the median-sized batch of its stratum: sizes {1,2,3,4}, {5,6,7}, {8,9,10}
    assert [int(padded[b[0]]) for b, _ in picks] == [3, 6, 9]


@pytest.mark.slow
@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_quick_epoch_estimate_reports_the_ratio(epoch_estimate, tmp_path):
    text = epoch_estimate.main(["--quick", "--out", str(tmp_path / "e.md"), "--threads", "1"])
    rows = _rows(text)
    for variant in ("encoder_decoder, length-grouped", "baseline nn.Transformer, random batches"):
        assert _number(rows[f"{variant} | estimated epoch time"]) >= 0
        assert _number(rows[f"{variant} | tokens/s"]) > 0
    grouped = _number(rows["encoder_decoder, length-grouped | real-token fraction (whole epoch)"])
    rand = _number(rows["encoder_decoder, random batches | real-token fraction (whole epoch)"])
    assert 0 < rand < grouped <= 1
    assert rows["RATIO | tokens/s ours grouped / baseline"].endswith("x")


@pytest.mark.parametrize(
    ("script", "report"),
    [
        ("benchmarks/bench.py", "BENCHMARKS.md"),
        ("benchmarks/epoch_estimate.py", "BENCHMARKS_EPOCH.md"),
        ("experiments/bench_adapt_science.py", "ADAPTATION.md"),
        ("experiments/bench_ladder.py", "LADDER.md"),
    ],
)
def test_measured_results_live_in_docs_results(script, report):
    """Each benchmark writes its report under docs/results/ by default, where it is kept."""
    source = (REPO / script).read_text()
    assert re.search(rf'"--out".*default=REPO\w* / "docs" / "results" / "{report}"', source), script
    assert (REPO / "docs" / "results" / report).is_file()
    assert not (REPO / report).exists(), f"{report} belongs in docs/results/, not the root"


def test_the_statistics_benchmark_reports_each_figure(capsys):
    """``benchmarks/bench_stats.py --quick``: every timed statistic once, a positive time."""
    spec = importlib.util.spec_from_file_location(
        "bench_stats", REPO / "benchmarks" / "bench_stats.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--quick"])
    assert len(rows) == 8 and all(s > 0 for _, s in rows)
    out = capsys.readouterr().out
    assert "paired_two_level, 10000 resamples" in out and "10 tasks x 5 examples" in out
