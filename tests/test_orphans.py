"""A dead driver's jobs that finished without it are adopted (arctax.orphans): their
incomplete markers removed only on proof (a done marker newer than the submission, every
output there), never while a driver holds the lock."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arctax.layout import job
from arctax.lifecycle.driver import record_owner
from arctax.orphans import adopt_finished
from arctax.settings import load_settings


@pytest.fixture
def study(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(overrides={"run": "t", "seeds": [0]})
    return s, Path("results/t")


def marker(output: Path) -> Path:
    return Path(".snakemake/incomplete") / base64.urlsafe_b64encode(str(output).encode()).decode()


def submitted(j, ago: float, jobid: str = "41") -> None:
    """The job's incomplete markers, as Snakemake writes them when it submits it."""
    for out in j.outputs:
        m = marker(out)
        m.parent.mkdir(parents=True, exist_ok=True)
        m.write_text(json.dumps({"external_jobid": jobid}))
        os.utime(m, (time.time() - ago,) * 2)


def finished(j, ago: float = 0.0, outputs: bool = True) -> None:
    if outputs:
        for out in j.outputs:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("x")
    j.done.parent.mkdir(parents=True, exist_ok=True)
    j.done.write_text("{}")
    os.utime(j.done, (time.time() - ago,) * 2)


def dead_driver() -> None:
    lock = Path(".snakemake/locks/0.output.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("results/t/x\n")
    rec = record_owner(".", ["0.output.lock"], ["snakemake", "all"])
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "pid": p.pid}))


def test_a_job_finished_after_its_driver_died_is_adopted(study):
    s, out = study
    dead_driver()
    train = job(out, "train", model="champion", seed=0)
    submitted(train, ago=100)
    finished(train)
    lines = adopt_finished(s, out)
    assert lines == [
        "arctax: adopted train champion seed0: it finished after its driver died, Slurm job 41 "
        "(its outputs kept, not run again)"
    ]
    assert not any(marker(p).exists() for p in train.outputs)
    assert all(p.is_file() for p in train.outputs)


@pytest.mark.parametrize("case", ["earlier_run", "output_missing", "not_finished"])
def test_no_proof_no_adoption(study, case):
    s, out = study
    ev = job(out, "evaluate", test_set="arcagi1_eval", model="champion", seed=0)
    submitted(ev, ago=100)
    if case == "earlier_run":  # the done marker predates this submission
        finished(ev, ago=1000)
    elif case == "output_missing":
        finished(ev)
        ev.outputs[0].unlink()
    else:
        for p in ev.outputs:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("x")
    assert adopt_finished(s, out) == []
    assert all(marker(p).exists() for p in ev.outputs)


def test_nothing_is_adopted_while_a_driver_holds_the_lock(study):
    s, out = study
    lock = Path(".snakemake/locks/0.output.lock")
    lock.parent.mkdir(parents=True)
    lock.write_text("results/t/x\n")
    record_owner(".", ["0.output.lock"], ["snakemake"])  # this process: alive
    shard = job(out, "adapt", label="champion", tag="seed0", shard=0, n=2)
    submitted(shard, ago=100)
    finished(shard)
    assert adopt_finished(s, out) == []
    assert marker(shard.outputs[0]).exists()


def test_every_rule_with_a_done_marker_is_one_a_job_writes():
    """The layout's done markers are the files the jobs write (a renamed marker would silently
    stop adoption)."""
    from arctax.layout import RULES

    have = {name for name, r in RULES.items() if r.done}
    assert have == {"generate_rearc", "train", "bootstrap_champion", "evaluate",
                    "evaluate_reference", "adapt"}  # fmt: skip
    from arctax.lifecycle import DONE
    from arctax.training.train import FINISHED

    assert RULES["train"].done.endswith(f"/{FINISHED}")
    assert RULES["bootstrap_champion"].done.endswith(f"/{FINISHED}")
    assert RULES["evaluate"].done.endswith(f"/{DONE}")
    assert RULES["evaluate_reference"].done.endswith(f"/{DONE}")
    assert RULES["adapt"].done.endswith("/shard{shard}-of-{n}.done")  # adaptation/run.py
    assert RULES["generate_rearc"].done.endswith("/shard-{shard}-of-{n}.done")  # rearc_generate
