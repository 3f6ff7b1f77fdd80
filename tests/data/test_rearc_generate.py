"""Generating re-arc per task: verified, unique, non-degenerate examples, seeded per task (the same
whatever the sharding), resumable per task, with statistics; gathered into re-arc's layout.

CI uses tests/fake_rearc (re-arc's interface, none of its code). With ARCTAX_REARC_REPO set to a
checkout of re-arc, the last test runs the real generators and prints their figures.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from arctax.data import rearc_generate as rg
from arctax.data.sources import load_source
from arctax.lifecycle import STOPPED_EXIT
from arctax.settings import Rearc, load_settings
from tests.conftest import REPO

FAKE = REPO / "tests" / "fake_rearc"
FAKE_IDS = ["007bbfb7", "00d62c1b", "017c7c7b", "025d127b", "045e512c"]
REAL = os.environ.get("ARCTAX_REARC_REPO")


def settings(**data_rearc) -> Rearc:
    """The generation settings of the default config with ``data.rearc`` overrides (the schema's
    defaults for the rest: no test restates them)."""
    return load_settings(overrides={"data": {"rearc": data_rearc}}).data.rearc_generation()


def test_task_ids_come_from_the_checkout_and_a_bad_path_names_the_fix(tmp_path):
    assert rg.task_ids(FAKE) == FAKE_IDS
    assert rg.task_ids(FAKE, ["017c7c7b", "007bbfb7"]) == ["007bbfb7", "017c7c7b"]
    with pytest.raises(rg.RearcError, match=r"data\.rearc\.tasks: ffffffff"):
        rg.task_ids(FAKE, ["ffffffff"])
    with pytest.raises(rg.RearcError) as e:
        rg.task_ids(tmp_path)
    assert "not a checkout of re-arc" in str(e.value) and "git clone" in str(e.value)
    assert "e5b7f1d" in str(e.value)


def test_kept_examples_are_verified_unique_and_not_degenerate():
    gens, vers, utils = rg.load_checkout(FAKE)
    s = settings(n_examples=40)
    seen_outcomes = set()
    for tid in FAKE_IDS[:4]:
        examples, st = rg.generate_task(tid, gens[tid], vers[tid], s, utils)
        assert len(examples) == 40 and st["complete"] and st["stopped"] is None
        inputs = [json.dumps(e["input"]) for e in examples]
        assert len(set(inputs)) == 40  # unique inputs
        for e in examples:
            grid = tuple(map(tuple, e["input"]))
            assert [list(r) for r in vers[tid](grid)] == e["output"]  # the verifier agrees
            assert e["input"] != e["output"]  # not degenerate
        assert st["attempts"] == sum(st[k] for k in rg.OUTCOMES)  # every call counted once
        assert 0 < st["rng_difficulty_mean"] < 1
        seen_outcomes |= {k for k in rg.OUTCOMES if st[k]}
    assert seen_outcomes == set(rg.OUTCOMES) - {"duplicate"}  # duplicates: the next task
    # 9 distinct inputs, one degenerate (5 -> 5): the task stops short after its attempts
    examples, st = rg.generate_task("045e512c", gens["045e512c"], vers["045e512c"],
                                    settings(n_examples=12, attempts_per_example=5), utils)  # fmt: skip
    assert len(examples) == 8 and not st["complete"] and st["stopped"] == "attempts"
    assert st["attempts"] == 60 and st["degenerate"] > 0 and st["duplicate"] > 40


def _generate(tmp_path: Path, shards: int, n: int = 15, seed: int = 0) -> Path:
    s = settings(n_examples=n, seed=seed, attempts_per_example=4)
    state = tmp_path / "state"
    records = []
    for i in range(shards):
        rec = state / f"{i}-of-{shards}.json"
        rg.generate_shard(
            FAKE, rg.shard_ids(FAKE_IDS, i, shards), s, state, rec, log=lambda m: None
        )
        records.append(rec)
    rg.gather(records, state, tmp_path / "re_arc")
    return tmp_path / "re_arc"


def test_a_tasks_examples_do_not_depend_on_the_sharding(tmp_path):
    one = _generate(tmp_path / "one", 1)
    three = _generate(tmp_path / "three", 3)
    for tid in FAKE_IDS:
        a = (one / "tasks" / f"{tid}.json").read_bytes()
        assert a == (three / "tasks" / f"{tid}.json").read_bytes(), tid
    other = _generate(tmp_path / "seed1", 1, seed=1)
    assert (other / "tasks/007bbfb7.json").read_bytes() != (
        one / "tasks/007bbfb7.json"
    ).read_bytes()
    alone = tmp_path / "alone"
    rg.generate_shard(FAKE, ["00d62c1b"], settings(n_examples=15, attempts_per_example=4), alone,
                      alone / "r.json", log=lambda m: None)  # fmt: skip
    assert (alone / "tasks/00d62c1b.json").read_bytes() == (
        one / "tasks/00d62c1b.json"
    ).read_bytes()


def test_the_gathered_folder_is_re_arcs_layout_with_statistics(tmp_path):
    out = _generate(tmp_path, 2)
    assert sorted(p.stem for p in (out / "tasks").glob("*.json")) == FAKE_IDS
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta) == set(FAKE_IDS)
    assert meta["00d62c1b"]["unverified"] > 0 and meta["007bbfb7"]["verified_share"] == 1.0
    gen = json.loads((out / "generation.json").read_text())
    assert gen["n_tasks"] == 5 and gen["short_tasks"] == {"045e512c": "8/15 (attempts)"}
    assert gen["n_examples"] == 4 * 15 + 8 and gen["version"].startswith("re-arc:code-")
    assert gen["settings"]["n_examples"] == 15 and gen["checkout"]["code_sha256"]
    src = load_source(str(out))
    assert src.kind == "re-arc" and src.version == gen["version"] and len(src.tasks) == 5


def test_a_shard_resumes_every_task_it_had_made(tmp_path):
    s = settings(n_examples=10, attempts_per_example=4)
    state, rec = tmp_path / "state", tmp_path / "rec.json"
    first = rg.generate_shard(FAKE, FAKE_IDS, s, state, rec, log=lambda m: None)
    assert first["resumed"] == []
    mtimes = {p.name: p.stat().st_mtime_ns for p in (state / "tasks").iterdir()}
    again = rg.generate_shard(FAKE, FAKE_IDS, s, state, rec, log=lambda m: None)
    assert again["resumed"] == FAKE_IDS and again["stats"] == first["stats"]
    assert {p.name: p.stat().st_mtime_ns for p in (state / "tasks").iterdir()} == mtimes
    (state / "tasks" / "017c7c7b.json").write_text("[]")  # a damaged file is made again
    third = rg.generate_shard(FAKE, FAKE_IDS, s, state, rec, log=lambda m: None)
    assert "017c7c7b" not in third["resumed"] and len(third["resumed"]) == 4
    other = rg.generate_shard(FAKE, FAKE_IDS, settings(n_examples=11), state, rec,
                              log=lambda m: None)  # fmt: skip
    assert other["resumed"] == []  # other settings: nothing reused


def test_a_stopped_shard_exits_75_and_its_retry_keeps_the_tasks_it_made(
    tmp_path, monkeypatch, capsys
):
    """SIGTERM (scancel, preemption) while the shard generates: it stops before its next task
    and exits 75 with its stop line (arctax.lifecycle.JobState); the retry resumes every task
    made before the signal, untouched, and makes the others."""
    s = settings(n_examples=10, attempts_per_example=4)
    state, rec = tmp_path / "state", tmp_path / "rec.json"
    real, made = rg.generate_task, []

    def then_a_signal(tid, *args):  # the signal lands while the second task is made
        made.append(tid)
        if len(made) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(tid, *args)

    monkeypatch.setattr(rg, "generate_task", then_a_signal)
    with pytest.raises(SystemExit) as e:
        rg.generate_shard(FAKE, FAKE_IDS, s, state, rec, log=lambda m: None, shard="1-of-3")
    assert e.value.code == STOPPED_EXIT and not rec.exists()
    assert "re-arc shard 1-of-3 stopped (received SIGTERM): 2 of 5 tasks kept" in (
        capsys.readouterr().err
    )
    kept = {p.name: p.stat().st_mtime_ns for p in (state / "tasks").iterdir()}
    assert sorted(kept) == [f"{t}.json" for t in FAKE_IDS[:2]]
    monkeypatch.setattr(rg, "generate_task", real)
    again = rg.generate_shard(FAKE, FAKE_IDS, s, state, rec, log=lambda m: None)
    assert again["resumed"] == FAKE_IDS[:2] and len(again["stats"]) == 5
    assert {k: v for k, v in ((p.name, p.stat().st_mtime_ns) for p in (state / "tasks").iterdir())
            if k in kept} == kept  # fmt: skip


def test_a_hanging_generator_stops_its_task_and_modules_of_the_same_names_survive(tmp_path):
    repo = tmp_path / "slow"
    repo.mkdir()
    (repo / "generators.py").write_text(
        "import time\n\ndef generate_0000aaaa(lb, ub):\n    time.sleep(30)\n"
    )
    (repo / "verifiers.py").write_text("def verify_0000aaaa(g):\n    return g\n")
    mine = type(sys)("utils")
    sys.modules["utils"] = mine
    try:
        gens, vers, _ = rg.load_checkout(repo)
        assert sys.modules["utils"] is mine and "generators" not in sys.modules
    finally:
        sys.modules.pop("utils", None)
    t0 = time.perf_counter()
    ex, st = rg.generate_task("0000aaaa", gens["0000aaaa"], vers["0000aaaa"],
                              settings(n_examples=3, call_timeout_s=0.3))  # fmt: skip
    assert time.perf_counter() - t0 < 5
    assert ex == [] and st["stopped"] == "timeout" and not st["complete"]


@pytest.mark.skipif(not REAL, reason="set ARCTAX_REARC_REPO to a checkout of re-arc")
def test_the_real_generators(tmp_path):
    """The real re-arc: 400 tasks x 5 examples, every kept example re-verified by re-arc's own
    verifier, and three tasks generated apart equal to the same tasks generated together."""
    ids = rg.task_ids(REAL)
    assert len(ids) == 400
    s = settings(n_examples=5)
    t0 = time.perf_counter()
    rec = rg.generate_shard(
        REAL, ids, s, tmp_path / "state", tmp_path / "r.json", log=lambda m: None
    )
    seconds = time.perf_counter() - t0
    gen = rg.gather([tmp_path / "r.json"], tmp_path / "state", tmp_path / "re_arc")
    _, vers, _ = rg.load_checkout(REAL)
    for tid in ids:
        for e in json.loads((tmp_path / "re_arc" / "tasks" / f"{tid}.json").read_text()):
            assert [list(r) for r in vers[tid](tuple(map(tuple, e["input"])))] == e["output"]
    apart = tmp_path / "apart"
    some = [ids[0], ids[199], ids[-1]]
    for tid in some:
        rg.generate_shard(REAL, [tid], s, apart, apart / f"{tid}.json", log=lambda m: None)
        a = (apart / "tasks" / f"{tid}.json").read_bytes()
        assert a == (tmp_path / "state" / "tasks" / f"{tid}.json").read_bytes(), tid
    print(f"\nre-arc {gen['version']}: {gen['n_tasks']} tasks x {s.n_examples} in {seconds:.1f} s "
          f"({gen['n_tasks'] / seconds:.2f} tasks/s, {gen['n_examples'] / seconds:.1f} examples/s), "
          f"verified share {gen['verified_share']:.3f}, outcomes {gen['outcomes']}, "
          f"short {gen['short_tasks']}")  # fmt: skip
    assert gen["verified_share"] > 0.9 and not gen["short_tasks"]
    assert len(rec["stats"]) == 400
