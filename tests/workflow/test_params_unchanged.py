"""Every job's params, as Snakemake compares them to decide what re-runs, equal the values
recorded before issue 37's redesign (tests/workflow/params/*.json): moving how settings flow
must re-run nothing. A changed value, a job gone or a new one fails, naming the jobs.

Recorded with ``python -m tests.workflow.test_params_unchanged`` (only where a change is MEANT
to re-run jobs; say so in the CHANGELOG)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.workflow.params_dump import dump

FIXTURES = Path(__file__).parent / "params"
REARC_HERE = {"data": {"rearc": {"repo": "tests/fake_rearc", "tasks_per_job": 2}}}
# name: (target, config files after config/config.yaml), the demo's overlays
SCENARIOS = {
    "demo": ("all", ["config/demo.yaml"]),
    "sweep": ("sweep", ["config/demo.yaml", "config/sweep-demo.yaml"]),
    "ladder": ("all", ["config/demo.yaml", "config/ladder.yaml"]),
    "ladder_as_run": ("all", ["config/demo.yaml", "config/ladder_as_run.yaml"]),
    "rearc": ("all", ["config/demo.yaml", "config/rearc.yaml", "rearc_here.yaml"]),
}


def params_of(name: str, workdir: Path) -> dict[str, dict]:
    """The params of every job of scenario ``name``, planned in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    for link in ("config", "tests"):
        (workdir / link).symlink_to(REPO / link)
    (workdir / "rearc_here.yaml").write_text(yaml.safe_dump(REARC_HERE))
    target, cfgs = SCENARIOS[name]
    return dump(workdir, target, cfgs)


def differences(got: dict[str, dict], want: dict[str, dict]) -> list[str]:
    """One line per job added, gone, or with a param of another value."""
    out = [f"new job {j}" for j in sorted(set(got) - set(want))]
    out += [f"job gone {j}" for j in sorted(set(want) - set(got))]
    for job in sorted(set(got) & set(want)):
        for k in sorted(set(got[job]) | set(want[job])):
            if got[job].get(k, "<absent>") != want[job].get(k, "<absent>"):
                out.append(f"{job}: param {k}: {want[job].get(k)!r} -> {got[job].get(k)!r}"[:400])
    return out


def test_the_demo_dags_params_equal_the_recorded_ones(tmp_path):
    """The demo: every job, the adaptation's shards included."""
    want = json.loads((FIXTURES / "demo.json").read_text())
    assert differences(params_of("demo", tmp_path), want) == []


@pytest.mark.full
@pytest.mark.parametrize("name", [n for n in SCENARIOS if n != "demo"])
def test_each_overlays_params_equal_the_recorded_ones(tmp_path, name):
    """The sweep, both ladders and re-arc generated in the workflow."""
    want = json.loads((FIXTURES / f"{name}.json").read_text())
    assert differences(params_of(name, tmp_path), want) == []


def test_a_changed_param_is_reported():
    """The comparison can fail: a changed value, a new job and a gone one are each named."""
    want = {"train[model=a]": {"recipe": "x"}, "gone[]": {}}
    got = {"train[model=a]": {"recipe": "y"}, "new[]": {}}
    assert differences(got, want) == [
        "new job new[]",
        "job gone gone[]",
        "train[model=a]: param recipe: 'x' -> 'y'",
    ]


if __name__ == "__main__":  # record: python -m tests.workflow.test_params_unchanged [names]
    import tempfile

    FIXTURES.mkdir(exist_ok=True)
    for name in sys.argv[1:] or SCENARIOS:
        with tempfile.TemporaryDirectory() as d:
            rows = params_of(name, Path(d) / "w")
        (FIXTURES / f"{name}.json").write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
        print(name, len(rows), "jobs")
