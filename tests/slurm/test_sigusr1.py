"""Where `--signal=SIGUSR1@N` lands for a job submitted by snakemake-executor-plugin-slurm.

Observed on Slurm 22.05.8 + plugin 2.8 (proctrack/linuxproc; proctrack/cgroup also signals every
process of the step). The plugin's batch script (`sbatch --wrap`: `#!/bin/sh`) runs an outer
`python -m snakemake --executor slurm-jobstep`, which starts the step `srun -n1 ... python -m
snakemake ...`; the rule's `script:` runs as a child of that inner snakemake process:
- `--signal=SIGUSR1@N` (steps): EVERY process of the srun step gets SIGUSR1. The rule's script
  (where training runs) receives it, but the inner `python -m snakemake` has no handler and dies
  from it ("srun: error: task 0: User defined signal 1"), so the rule fails.
- `--signal=B:SIGUSR1@N` (batch shell only): /bin/sh dies from it, the job is CANCELLED/FAILED and
  the rule's script never sees SIGUSR1.
This test pins that behaviour so a Slurm or Snakemake upgrade that changes it gets noticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from slurm_utils import JOBNAME_ARGS, submitter_env

pytestmark = pytest.mark.slurm

RECORDER = """\
import os, signal, time
out = snakemake.output[0]  # noqa: F821
got = []
def on_usr1(sig, frame):
    got.append(time.monotonic())
    with open(out + ".sig", "a") as f:
        f.write("SIGUSR1\\n")
signal.signal(signal.SIGUSR1, on_usr1)
with open(out + ".sig", "a") as f:
    f.write("start\\n")
t0 = time.monotonic()
# Long enough for the signal (due 120 s after the job starts); short once it came.
while time.monotonic() - t0 < 150 and not (got and time.monotonic() - got[0] > 3):
    time.sleep(0.2)
open(out, "w").write("done\\n")
"""

SNAKEFILE = """\
rule all:
    input: "steps.txt", "batch.txt"
rule steps:
    output: "steps.txt"
    resources: runtime=3, slurm_extra="'--signal=SIGUSR1@60'"
    script: "rec.py"
rule batch:
    output: "batch.txt"
    resources: runtime=3, slurm_extra="'--signal=B:SIGUSR1@60'"
    script: "rec.py"
"""


# A signal due N s before the end is sent up to 60 s earlier (Slurm's event resolution) and only
# to steps that exist by then: with 3 min and N = 60 it lands 60-120 s after the job starts, after
# the step has started even on a loaded machine. (N = 150 gave 0-30 s: on a fresh 2-core clone the
# step was not up yet and the signal was lost.)


def test_sigusr1_delivery(slurm_cluster: None, tmp_path: Path) -> None:
    (tmp_path / "rec.py").write_text(RECORDER)
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    cmd = [
        *("timeout", "-k", "15", "300"),
        *(sys.executable, "-m", "snakemake", "--executor", "slurm", "-j", "2", "--keep-going"),
        *("--slurm-keep-successful-logs", "--slurm-init-seconds-before-status-checks", "5"),
        *JOBNAME_ARGS,
        "all",
    ]
    res = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, check=False, env=submitter_env()
    )
    log = res.stdout + res.stderr
    assert res.returncode not in (124, 137), f"snakemake timed out:\n{log[-3000:]}"
    # The plugin accepted --signal in slurm_extra and put it on sbatch (else no signal at all).
    assert "slurm_extra='--signal=SIGUSR1@60'" in log

    steps_sig = (tmp_path / "steps.txt.sig").read_text().split()
    assert steps_sig[:2] == ["start", "SIGUSR1"], "training process should get step SIGUSR1"
    steps_log = "".join(p.read_text() for p in tmp_path.glob(".snakemake/slurm_logs/rule_steps/*"))
    assert "User defined signal 1" in steps_log, "inner snakemake should die from SIGUSR1"
    assert "Error in rule steps" in log

    batch_sig = tmp_path / "batch.txt.sig"
    assert not batch_sig.exists() or "SIGUSR1" not in batch_sig.read_text()
    assert "Error in rule batch" in log
    assert not (tmp_path / "batch.txt").exists()
    assert res.returncode != 0
