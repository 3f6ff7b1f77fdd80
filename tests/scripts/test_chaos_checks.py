"""The checks of the fault injector (scripts/chaos.py) on constructed trees and timelines, so
each can be seen to fail: a number that moved, a partial file, a status line that called a
dead job running or a finished one unfinished, two copies of a job at once. (The injector's run
itself is tests/slurm/test_chaos.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from arctax.io import atomic_torch_save
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import chaos
import chaos_checks as checks


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    for root, secs in ((a, 1.5), (b, 9.0)):
        write(
            root / "eval" / "summary.json", json.dumps({"grid_acc": 0.25, "decode_seconds": secs})
        )
        write(root / "train" / "metrics.csv", f"epoch,val_loss,seconds\n0,1.25,{secs}\n")
        write(root / "eval" / "predictions.json", json.dumps({"t1": [[1, 2]]}))
        write(root / "logs" / "x.log", str(secs))  # logs are not results
        atomic_torch_save(root / "train" / "best.ckpt", {"state_dict": {"w": torch.ones(2)}})
    return a, b


def test_timings_differ_numbers_agree(trees) -> None:
    a, b = trees
    got = checks.compare_trees(a, b)
    assert sorted(got["identical"]) == ["eval/predictions.json", "train/best.ckpt"]
    assert sorted(got["equal_but_timing"]) == ["eval/summary.json", "train/metrics.csv"]
    assert got["different"] == {} and got["missing"] == got["extra"] == []


def test_a_moved_number_a_changed_weight_and_a_missing_file_are_differences(trees) -> None:
    a, b = trees
    write(b / "eval" / "summary.json", json.dumps({"grid_acc": 0.5, "decode_seconds": 1.0}))
    write(b / "train" / "metrics.csv", "epoch,val_loss,seconds\n0,1.26,1.5\n")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, b / "train" / "best.ckpt")
    (b / "eval" / "predictions.json").unlink()
    got = checks.compare_trees(a, b)
    assert got["different"] == {
        "eval/summary.json": [".grid_acc"],
        "train/metrics.csv": ["a value outside the timing columns"],
        "train/best.ckpt": ["/state_dict/w (tensor)"],
    }
    assert got["missing"] == ["eval/predictions.json"]


def test_partial_files_are_found(tmp_path: Path) -> None:
    write(tmp_path / "ok.json", "{}")
    write(tmp_path / "cut.json", '{"a": [1, 2')
    write(tmp_path / "d" / ".best.ckpt.ab12.tmp", "x")
    ckpt = tmp_path / "d" / "last.ckpt"
    torch.save({"w": torch.ones(100)}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:200])  # a checkpoint cut short
    assert checks.partial_files(tmp_path) == [
        "cut.json (does not read whole)",
        "d/.best.ckpt.ab12.tmp (temp file)",
        "d/last.ckpt (does not read whole)",
    ]


def poll(t0: float, state: str, exists: bool = True) -> checks.Poll:
    return checks.Poll(t0, t0 + 1, 0, rows={"train m seed1": state}, slurm={},
                      exists_before={"train m seed1": exists},
                      exists_after={"train m seed1": exists})  # fmt: skip


def test_status_violations_against_slurm_and_the_disk() -> None:
    keys = {"train m seed1": ("train", "m_1")}
    subs = {"10": ("train", "m_1")}
    jobs = {"10": {"state": "COMPLETED", "submit": 100.0, "start": 101.0, "end": 150.0}}
    # while the job ran: running is right; after it completed: only done is
    assert checks.status_violations([poll(120, "running", False)], keys, subs, jobs) == []
    assert checks.status_violations([poll(200, "done")], keys, subs, jobs) == []
    bad = checks.status_violations([poll(200, "running"), poll(210, "stopped-will-resume")],
                                  keys, subs, jobs)  # fmt: skip
    assert bad == [
        "poll 0 (200): train m seed1 called running; its Slurm jobs 10 had all ended",
        "poll 0 (200): train m seed1 called 'running'; it had finished",
        "poll 1 (210): train m seed1 called 'stopped-will-resume'; it had finished",
    ]
    # a retry queued after the completion: not finished any more (it runs again)
    subs["11"] = ("train", "m_1")
    jobs["11"] = {"state": "COMPLETED", "submit": 205.0, "start": 230.0, "end": 260.0}
    assert checks.status_violations([poll(210, "queued")], keys, subs, jobs) == []
    crashed = checks.Poll(5, 6, 1, error="Traceback")
    assert checks.status_violations([crashed], keys, subs, jobs) == [
        "poll 0: crashed (exit 1): Traceback"
    ]


def test_two_copies_at_once_and_work_done_twice() -> None:
    subs = {"10": ("train", "m_1"), "11": ("train", "m_1"), "12": ("evaluate", "v_m_1")}
    jobs = {
        "10": {"state": "COMPLETED", "start": 100.0, "end": 160.0},
        "11": {"state": "COMPLETED", "start": 130.0, "end": 190.0},
        "12": {"state": "COMPLETED", "start": 200.0, "end": 210.0},
    }
    got = checks.overlaps(subs, jobs)
    assert got["ran_twice_at_once"] == [
        "train m_1: jobs 10 (COMPLETED) and 11 (COMPLETED) ran together for 30s"
    ]
    assert got["completed_more_than_once"] == ["train m_1: completed 2 times (jobs 10, 11)"]
    fates = checks.orphan_fates(["10"], subs, jobs, 100.0)
    assert fates == ["train m_1: orphan 10 COMPLETED (0s-60s); copy 11 COMPLETED (30s-90s) "
                     "ran at the same time"]  # fmt: skip


def test_the_plan_is_the_seed_s() -> None:
    import random

    a = chaos.plan(random.Random(38), 200.0, checks.KINDS)
    b = chaos.plan(random.Random(38), 200.0, checks.KINDS)
    assert [(f.kind, f.at_s) for f in a] == [(f.kind, f.at_s) for f in b]
    assert {f.kind for f in a} == set(checks.KINDS)
    assert all(0.08 * 200 <= f.at_s <= 0.7 * 200 for f in a)


def test_slurm_s_own_messages_are_listed(tmp_path: Path) -> None:
    write(tmp_path / "rule_train" / "m_1" / "12.log",
          "srun: cluster configuration lacks support for cpu binding\n"
          "srun: Job 12 step creation temporarily disabled, retrying (Requested nodes are busy)\n"
          "epoch 0\n")  # fmt: skip
    write(tmp_path / "rule_evaluate" / "v_m_1" / "13.log",
          "slurmstepd-vm: error: *** JOB 13 ON vm CANCELLED AT 2026-12-07T13:43:53 ***\n")  # fmt: skip
    assert checks.slurm_messages(tmp_path) == [
        "evaluate v_m_1 job 13: slurmstepd-vm: error: *** JOB 13 ON vm CANCELLED AT "
        "2026-12-07T13:43:53 ***",
        "train m_1 job 12: srun: Job 12 step creation temporarily disabled, retrying "
        "(Requested nodes are busy)",
    ]


def test_ownership_events_show_two_writers_and_who_worked(tmp_path):
    """A copy that owned a job while its previous owner had neither released it nor been taken
    over from is two writers at once; a copy that adopted did no work."""
    from chaos_checks import owner_events, working_jobs, writers_at_once

    def events(name: str, rows: list[tuple[str, str, int]]) -> None:
        f = tmp_path / ".state" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("".join(json.dumps({"t": i, "event": e, "slurm_job_id": j, "pid": p}) + "\n"
                             for i, (e, j, p) in enumerate(rows)))  # fmt: skip

    events("train/champion/seed1.owner.log", [("owns", "5", 1), ("waits", "9", 2),
           ("releases", "5", 1), ("owns", "9", 2), ("adopts", "9", 2), ("releases", "9", 2)])  # fmt: skip
    events("eval/val/champion/seed1.owner.log", [("owns", "6", 3), ("takes over", "8", 4),
           ("owns", "8", 4), ("releases", "8", 4)])  # fmt: skip
    ev = owner_events(tmp_path)
    assert writers_at_once(ev) == []
    assert working_jobs(ev) == ({"5", "6", "8"}, {"9"})
    events("adapt/x.shard0-of-2.owner.log", [("owns", "7", 5), ("owns", "10", 6)])
    assert writers_at_once(owner_events(tmp_path)) == [
        ".state/adapt/x.shard0-of-2.owner.log: 10 owned it while 7 still did"
    ]


def test_a_job_squeue_still_lists_running_is_not_called_dead():
    """Slurm's own view after the poll (squeue) counts: sacct may date a job's end before
    squeue stops listing it."""
    from chaos_checks import Poll, status_violations

    keys = {"evaluate val champion seed1": ("evaluate", "val_champion_1")}
    subs = {"7": ("evaluate", "val_champion_1")}
    jobs = {"7": {"state": "FAILED", "submit": 0.0, "start": 1.0, "end": 5.0}}
    poll = Poll(t0=10.0, t1=11.0, rc=0, rows={"evaluate val champion seed1": "running"})
    assert len(status_violations([poll], keys, subs, jobs)) == 1
    poll.listed = {"7"}
    assert status_violations([poll], keys, subs, jobs) == []
