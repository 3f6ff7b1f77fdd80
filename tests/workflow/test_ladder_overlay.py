"""The ladder overlays through the workflow: the dry run plans the five rungs of each ladder
(config/ladder.yaml, corrected; config/ladder_as_run.yaml, as the paper's code ran it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO
from tests.workflow.test_workflow import SNAKEMAKE, job_counts

OFF = 'adapt={"enabled": false}'


def smk(*args: str) -> str:
    """A dry run with THIS checkout's arctax first on the path (not an installed copy)."""
    path = os.pathsep.join([str(REPO / "src"), str(REPO)])
    res = subprocess.run([SNAKEMAKE, *args], cwd=REPO, capture_output=True, text=True,
                         timeout=900, env={**os.environ, "PYTHONPATH": path})  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"snakemake {' '.join(args)} failed:\n{out[-4000:]}"
    return out


@pytest.mark.parametrize("overlay", ["config/ladder.yaml", "config/ladder_as_run.yaml"])
def test_the_ladder_overlay_plans_five_models(overlay):
    """Full size (one seed: five trainings) and the demo (the ladder's three seeds: fifteen)."""
    ref = 'champion={"bootstrap": true}'  # full size: no original weights here
    full = smk("all", "-n", "--forceall", "--configfile", "config/config.yaml",
               overlay, "--config", "seeds=[307]", OFF, ref)  # fmt: skip
    demo = smk("all", "-n", "--forceall", "--configfile", "config/config.yaml",
               "config/demo.yaml", overlay, "--config", OFF)  # fmt: skip
    for out, run, seeds in ((full, "trial69", 1), (demo, "demo", 3)):
        c = job_counts(out)
        assert (c["smoke_test"], c["train"], c["evaluate"]) == (5, 5 * seeds, 5 * seeds), out
        for rung in ("decoder_only", "encoder_decoder", "grid2d", "perminv", "champion"):
            assert f"results/{run}/train/{rung}/seed307/best.ckpt" in out


def test_the_positive_control_plans_the_whole_workflow_on_generated_families(tmp_path):
    """`make demo-control`: `arctax families` writes the data source, then config/control.yaml
    points the demo at it (every model trained, evaluated, voted and adapted per row)."""
    tasks = tmp_path / "tasks"
    path = os.pathsep.join([str(REPO / "src"), str(REPO)])
    subprocess.run([sys.executable, "-m", "arctax.cli", "families", "--out", str(tasks),
                    "--rules", "flip,gravity", "--per-rule", "5", "--per-row", "2"],
                   check=True, env={**os.environ, "PYTHONPATH": path})  # fmt: skip
    over = tmp_path / "here.yaml"
    over.write_text(yaml.safe_dump({
        "data": {"source": str(tasks / "train"),
                 "test_sets": {"test": str(tasks / "test"), "val": "val"}},
        "taxonomy": {"labels": str(tasks / "labels.json")},
    }))  # fmt: skip
    out = smk("all", "-n", "--forceall", "--configfile", "config/config.yaml",
              "config/demo.yaml", "config/control.yaml", str(over))  # fmt: skip
    c = job_counts(out)
    # the rows and the val split (the paper's metric beside the paper's figures), each compared
    assert (c["train"], c["evaluate"], c["compare"], c["compare_adapt"]) == (3, 6, 2, 1), out
    assert "results/control/compare/adaptation.md" in out
    assert "results/control/compare/val/summary.md" in out
