"""`snakemake sweep` through its CLI, without running jobs: the DAG, and a bad search space
refused when the workflow starts (one line naming the key)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
DEMO = ("--configfile", "config/demo.yaml", "config/sweep-demo.yaml")


def smk(*args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([SNAKEMAKE, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    res.output = res.stdout + res.stderr
    return res


def job_counts(output: str) -> dict[str, int]:
    m = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+(\d+)", output, re.S)
    return {r.split()[0]: int(r.split()[1]) for r in m.group(1).strip().splitlines()} if m else {}


def test_sweep_dag_has_a_job_per_worker_and_a_report():
    res = smk("sweep", "-n", "--forceall", *DEMO)
    assert res.returncode == 0, res.output[-3000:]
    assert job_counts(res.output) == {
        "prepare_data": 1,
        "sweep_worker": 2,
        "sweep_report": 1,
        "sweep": 1,
    }
    assert "results/sweep-demo/sweep/champion/workers/1.json" in res.output
    more = smk("sweep", "-n", "--forceall", *DEMO, "--config", 'sweep={"workers": 3}')
    assert job_counts(more.output)["sweep_worker"] == 3


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("trial69.optimizer.lr: {type: float, low: 0.1, high: 0.01}", "low (0.1) is greater than high"),
        ("trial69.optimizer.lrate: {type: float, low: 0.001, high: 0.01}", "no such key"),
        ("trial69.optimizer.lr: {type: float, low: 0, high: 0.01, log: true}", "log: true needs low > 0"),
    ],
)  # fmt: skip
def test_a_bad_space_stops_the_workflow_with_the_key(tmp_path, entry, fragment):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"sweep:\n  space:\n    {entry}\n")
    res = smk("sweep", "-n", *DEMO, str(bad))
    key = entry.split(":")[0]
    assert res.returncode != 0
    line = next(ln for ln in res.output.splitlines() if f"'sweep.space.{key}'" in ln)
    assert fragment in line, res.output[-2000:]
