"""The adaptation benchmark: its task families are what they claim, and the script runs end
to end on tiny sizes (so it cannot rot)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from arctax.data import families
from arctax.data.augment import Augmentation

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "experiments"), str(REPO / "benchmarks")]

from adapt_science_tables import write_sections  # noqa: E402


def _follows(task, rule) -> bool:
    try:
        return all(np.array_equal(rule(x), y) for x, y in task["train"] + task["test"])
    except ValueError:  # swap is defined on grids of two colours only
        return False


def test_each_condition_is_what_it_claims():
    rng = np.random.default_rng(0)
    trained = [families.RULES[f] for f in families.TRAINED]
    for _ in range(10):
        for fam in families.TRAINED:
            task = families.make_task(fam, rng)
            assert _follows(task, families.RULES[fam])
            assert all(not np.array_equal(x, y) for x, y in task["train"] + task["test"])
        for fam in families.VIEW_REACHABLE:  # not trained as it is, a trained rule under a view
            task = families.make_task(fam, rng)
            assert not any(_follows(task, r) for r in trained)
            seen = [
                {k: [(v.apply(x), v.apply(y)) for x, y in p] for k, p in task.items()}
                for v in (Augmentation(d) for d in range(8))
            ]
            assert any(_follows(s, r) for s in seen for r in trained), fam
        task = families.make_task("colour_map", rng)  # no view makes it a trained rule
        seen = [
            {k: [(v.apply(x), v.apply(y)) for x, y in p] for k, p in task.items()}
            for v in (Augmentation(d) for d in range(8))
        ]
        assert not any(_follows(s, r) for s in seen for r in trained)
        shown = {int(c) for x, _ in task["train"] for c in np.unique(x)}
        assert {int(c) for c in np.unique(task["test"][0][0])} <= shown  # learnable from demos
        for fam in families.FAR_RULE:  # a kind never trained: no view makes it a trained rule
            task = families.make_task(fam, rng)
            seen = [
                {k: [(v.apply(x), v.apply(y)) for x, y in p] for k, p in task.items()}
                for v in (Augmentation(d) for d in range(8))
            ]
            assert not any(_follows(s, r) for s in seen for r in trained), fam
            if fam != "frame":  # frame's colour is the task's own
                assert _follows(task, families.RULES[fam]), fam
    frame = families.make_task("frame", rng)
    paints = {int(y[0, 0]) for _, y in frame["train"] + frame["test"]}
    assert len(paints) == 1 and all(
        (y[[0, -1]] == y[0, 0]).all()
        and (y[:, [0, -1]] == y[0, 0]).all()
        and np.array_equal(y[1:-1, 1:-1], x[1:-1, 1:-1])
        for x, y in frame["train"] + frame["test"]
    )


def test_sections_are_replaced_one_at_a_time(tmp_path):
    out = tmp_path / "A.md"
    write_sections(out, results="R1\n")
    write_sections(out, ablation="B1\n")
    text = write_sections(out, results="R2\n")
    assert "R2" in text and "B1" in text and "R1" not in text
    assert text.index("R2") < text.index("B1") and out.read_text() == text


def test_quick_run_writes_every_table(tmp_path):
    import bench_adapt_science as bench

    out = tmp_path / "ADAPTATION.md"
    text = bench.run(["--quick", "--out", str(out), "--work", str(tmp_path / "w"), "--jobs", "1"])
    assert out.read_text() == text and "bench_adapt_science.py --quick" in text
    assert "### Targets" in text and ("All targets met." in text or "not met" in text)
    for cond in families.CONDITIONS:
        assert f"| {'champion'} | {cond} |" in text
    for model in bench.MODELS:
        assert f"| {model} | base |" in text
    assert text.count("| +adapt |") == len(families.CONDITIONS) * len(bench.MODELS)
    # the far condition runs, and the former method beside the shipped one, rule by rule
    assert "| champion | far_rule | +adapt above +vote by >= 10% points" in text
    assert "### Before and after" in text
    for rule in families.FAR_RULE:
        assert f"|   far_rule: {rule} |" in text
    # models are kept while their inputs match: a second run trains nothing
    again = bench.run(["--quick", "--out", str(out), "--work", str(tmp_path / "w"), "--jobs", "1"])
    assert "training: reused from --work" in again
