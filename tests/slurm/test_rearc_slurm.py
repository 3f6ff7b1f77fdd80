"""`generate_rearc` on the local cluster (slow): re-arc generated as CPU Slurm jobs.

In a copy of the working tree, with tests/fake_rearc standing in for a checkout of re-arc (its
interface, none of its code): 5 tasks at 2 per job are 3 `generate_rearc` jobs, each a Slurm job
with no GPU; they are gathered into re-arc's layout, which `prepare_data` (a Slurm job too)
reads. The examples equal those of one local process (a task's examples never depend on the
sharding), and a shard run again resumes every task it had made.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from slurm_utils import JOBNAME_ARGS, SUBMITTED, copy_tree, run_snakemake, sacct_field

from arctax.data import rearc_generate as rg
from arctax.settings import load_settings

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

RUN = "rearc-slurm"
OVERLAY = f"""\
run: {RUN}
data:
  source: rearc
  examples_per_task: 12
  max_tasks: 4
  rearc:
    repo: tests/fake_rearc
    tasks_per_job: 2
"""
TARGET = f"results/{RUN}/data/manifest.json"
IDS = ["007bbfb7", "00d62c1b", "017c7c7b", "025d127b", "045e512c"]


def snakemake(workdir: Path, *extra: str, timeout: int = 600) -> tuple[int, str]:
    cmd = [
        *("timeout", "-k", "15", str(timeout)),
        *(sys.executable, "-m", "snakemake", TARGET, "--profile", "profiles/slurm"),
        *("--configfile", "config/demo.yaml", "rearc.yaml"),
        *("--slurm-init-seconds-before-status-checks", "2"),
        *JOBNAME_ARGS,
        *extra,
    ]
    return run_snakemake(cmd, workdir)


@pytest.fixture(scope="module")
def workdir(slurm_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rearc")
    copy_tree(d)
    (d / "rearc.yaml").write_text(OVERLAY)
    return d


@pytest.fixture(scope="module")
def first_run(workdir: Path) -> str:
    code, log = snakemake(workdir)
    assert code == 0, log[-6000:]
    return log


def test_each_shard_is_a_cpu_slurm_job(first_run: str, workdir: Path) -> None:
    jobs = SUBMITTED.findall(first_run)
    rules = sorted(rule for _, rule, _ in jobs)
    assert rules == ["generate_rearc"] * 3 + ["prepare_data"]
    for job, rule, _ in jobs:
        assert sacct_field(job, "State") == "COMPLETED", (job, rule)
        tres = sacct_field(job, "AllocTRES").split(",")
        assert not any(t.startswith("gres/gpu") for t in tres), (job, tres)  # no GPU asked
        if rule == "generate_rearc":
            assert "cpu=1" in tres, tres
    out = workdir / "results" / RUN
    shards = [json.loads((out / f"rearc/shards/{i}-of-3.json").read_text()) for i in range(3)]
    assert [s["tasks"] for s in shards] == [IDS[:2], IDS[2:4], IDS[4:]]
    assert sorted(s["slurm_job_id"] for s in shards) == sorted(
        j for j, r, _ in jobs if r == "generate_rearc"
    )
    assert "localrule rearc_gather:" in first_run  # gathered where snakemake runs


def test_the_generated_folder_is_read_by_prepare_data(first_run: str, workdir: Path) -> None:
    out = workdir / "results" / RUN
    gen = json.loads((out / "rearc/re_arc/generation.json").read_text())
    assert gen["n_tasks"] == 5 and set(
        json.loads((out / "rearc/re_arc/metadata.json").read_text())
    ) == set(IDS)
    assert gen["short_tasks"] == {"045e512c": "8/12 (attempts)"}
    m = json.loads((out / "data/manifest.json").read_text())
    assert m["source_kind"] == "re-arc" and m["version"] == gen["version"]
    assert m["source_path"].endswith("rearc/re_arc") and m["examples_per_task"] == 12
    assert m["short_tasks"] == {"045e512c": 8}


def test_the_examples_do_not_depend_on_the_sharding(
    first_run: str, workdir: Path, tmp_path
) -> None:
    s = load_settings(
        overrides=yaml.safe_load(OVERLAY)
    ).data.rearc_generation()  # the run's own settings
    rg.generate_shard(workdir / "tests/fake_rearc", IDS, s, tmp_path, tmp_path / "r.json",
                      log=lambda m: None)  # fmt: skip
    for tid in IDS:
        made = (workdir / "results" / RUN / "rearc/re_arc/tasks" / f"{tid}.json").read_bytes()
        assert made == (tmp_path / "tasks" / f"{tid}.json").read_bytes(), tid


def test_a_shard_run_again_resumes_its_tasks(first_run: str, workdir: Path) -> None:
    shard = f"results/{RUN}/rearc/shards/1-of-3.json"
    code, log = snakemake(workdir, "--forcerun", shard)
    assert code == 0, log[-4000:]
    rules = sorted(rule for _, rule, _ in SUBMITTED.findall(log))
    assert rules == ["generate_rearc", "prepare_data"]
    again = json.loads((workdir / shard).read_text())
    assert again["resumed"] == IDS[2:4]  # nothing generated twice
