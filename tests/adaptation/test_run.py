"""Shards: contiguous task groups, the base checkpoint untouched, a retry keeps answered tasks,
a finished shard run again starts over, and gathering gives the usual evaluation files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from arctax.adaptation.run import adapt_shard, gather
from arctax.adaptation.shards import adapted_task_ids, n_shards, shard_task_ids
from arctax.data.collate import collate
from arctax.data.dataset import load_split
from arctax.evaluation.evaluate import evaluate
from arctax.io import file_sha256
from arctax.lifecycle import STOPPED_EXIT
from arctax.settings import load_settings
from arctax.training.module import ARCLitModule
from tests.conftest import REPO, TINY_MODELS, adapt_settings, memorise, tiny_overrides

ADAPT = {"enabled": True, "rank": 2, "alpha": 4, "steps": 4, "lr": 3e-3, "batch_size": 8,
         "augment_views": 2, "voting_views": 2, "tasks_per_job": 3, "max_tasks": 6, "seed": 0,
         "select": "none"}  # fmt: skip


def _cfg(**adapt):
    over = tiny_overrides()
    over["adapt"] = {**ADAPT, **adapt}
    over["eval"] = {"max_new_tokens": 60, "batch_size": 16, "bootstrap_samples": 200}
    return load_settings(overrides=over)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny champion checkpoint as training writes it (weights_only-loadable)."""
    torch.manual_seed(0)
    module = ARCLitModule("champion", TINY_MODELS["champion"], {}, 2)
    path = tmp_path_factory.mktemp("ckpt") / "best.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_shards_are_contiguous_blocks_of_the_adapted_tasks():
    ids = [f"t{i:02d}" for i in range(10)]
    acfg = adapt_settings(tasks_per_job=4, max_tasks=None)
    assert n_shards(10, acfg) == 3
    blocks = [shard_task_ids(ids, acfg, s, 3) for s in range(3)]
    assert blocks == [ids[0:4], ids[4:8], ids[8:10]]
    assert n_shards(10, acfg.replace(max_tasks=5)) == 2
    assert adapted_task_ids(list(reversed(ids)), acfg.replace(max_tasks=3)) == ids[:3]


def test_a_shard_adapts_its_tasks_and_leaves_the_checkpoint_untouched(ckpt, tiny_data, tmp_path):
    cfg = _cfg()
    before = (file_sha256(ckpt), ckpt.stat().st_mtime_ns)
    out = adapt_shard(cfg, ckpt, tiny_data, 1, 2, tmp_path / "s1.json", tmp_path / "state")
    assert (file_sha256(ckpt), ckpt.stat().st_mtime_ns) == before
    ds = load_split(tiny_data, "test")
    assert out["tasks"] == sorted(ds.task_ids)[3:6] and out["resumed"] == []
    on_disk = json.loads((tmp_path / "s1.json").read_text())
    assert [r["task_id"] for r in on_disk["records"]] == out["tasks"]
    assert all(r["loss_last"] < r["loss_first"] for r in on_disk["records"])
    # run again after it finished (a forced re-run): adapted again, not resumed
    again = adapt_shard(cfg, ckpt, tiny_data, 1, 2, tmp_path / "s1.json", tmp_path / "state")
    assert again["resumed"] == []


@pytest.mark.parametrize(
    "sig",
    [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.full)],  # ~40 s: it waits
    ids=["killed", "stopped"],  # for the task being adapted to finish
)
def test_a_killed_or_stopped_shard_keeps_the_tasks_it_answered(ckpt, tiny_data, tmp_path, sig):
    """SIGKILL (no clean-up at all) or SIGTERM (scancel, preemption: the shard stops between
    task groups and exits 75, arctax.lifecycle): the retry reuses every saved task."""
    state, out = tmp_path / "state", tmp_path / "s0.json"
    code = (
        "import sys\n"
        "from arctax.adaptation.run import adapt_shard\n"
        "from tests.adaptation.test_run import _cfg\n"
        "adapt_shard(_cfg(steps=40, tasks_per_job=6), *sys.argv[1:3], 0, 1, *sys.argv[3:5])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(ckpt), str(tiny_data), str(out), str(state)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(state.glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert code == (STOPPED_EXIT if sig == signal.SIGTERM else -signal.SIGKILL)
    done = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in state.glob("*.json")}
    assert 2 <= len(done) < 6 and not out.exists(), proc.stdout.read()
    res = adapt_shard(_cfg(steps=40, tasks_per_job=6), ckpt, tiny_data, 0, 1, out, state)
    assert len(res["resumed"]) == len(done) and len(res["tasks"]) == 6
    for name, (data, mtime) in done.items():  # kept as they were, not recomputed
        p = state / name
        assert p.read_bytes() == data and p.stat().st_mtime_ns == mtime
    assert [r["task_id"] for r in res["records"]] == res["tasks"]


def test_voting_over_one_view_reproduces_the_base_evaluation(tiny_data, tmp_path):
    """With a single (identity) view and no steps, the base, +vote and +adapt rows are the
    base model's own greedy answers: the stage changes nothing it should not."""
    cfg = _cfg(voting_views=1, augment_views=1, steps=0, attempts=1, max_tasks=None,
               tasks_per_job=100)  # fmt: skip
    cfg = cfg.with_overrides({"eval": {"attempts": 1}})
    torch.manual_seed(0)
    module = ARCLitModule(
        "encoder_decoder", dict(TINY_MODELS["encoder_decoder"], dropout=0.0), {}, 2
    )
    ds = load_split(tiny_data, "test")
    queries = [i for i in range(len(ds)) if ds.ex_aug[i] == 0][:12]
    memorise(module.model, collate([ds[i] for i in queries], "seq2seq", 2), lr=3e-3)
    path = tmp_path / "memo.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    base = evaluate(cfg, path, tiny_data, tmp_path / "eval", "m", 1)
    assert base["grid_correct"].sum() >= 1  # memorised answers are generated
    shard = adapt_shard(cfg, path, tiny_data, 0, 1, tmp_path / "s.json", tmp_path / "st")
    out = gather(cfg, [tmp_path / "s.json"], tiny_data, tmp_path / "v", tmp_path / "a", "m", 1,
                 base_dir=tmp_path / "b")  # fmt: skip
    assert len(shard["tasks"]) == len(ds.task_ids)
    for kind in ("base", "vote", "adapt"):
        got = out[kind].set_index(["task_id", "query"])["grid_correct"]
        want = base.set_index(["task_id", "query"])["grid_correct"]
        assert got.to_dict() == want.to_dict(), kind
        summary = json.loads((tmp_path / kind[0] / "summary.json").read_text())
        assert summary["adaptation"]["kind"] == kind and summary["label"] == f"m+{kind}"
    assert Path(tmp_path / "a" / "submission.json").is_file()


def test_a_checkpoint_naming_code_is_refused_before_adapting(tiny_data, tmp_path, monkeypatch):
    from arctax.evaluation.checkpoints import CheckpointError
    from tests.evaluation.conftest import evil_code, save_evil_ckpt

    monkeypatch.syspath_prepend(str(tmp_path))
    for cls in evil_code(tmp_path)[:2]:
        ckpt = save_evil_ckpt(tmp_path / "evil.ckpt", cls)
        with pytest.raises(CheckpointError, match="refused before importing"):
            adapt_shard(_cfg(), ckpt, tiny_data, 0, 1, tmp_path / "out.json", tmp_path / "st")
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "out.json").exists()
