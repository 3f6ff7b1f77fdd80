"""The one results layout (arctax.layout): every rule of the workflow writes where it says, and
``arctax status`` names every job a dry run of the workflow plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arctax import status as st
from arctax.layout import RULES, Layout, outputs_doc_text
from arctax.settings import load_settings
from tests.conftest import REPO
from tests.workflow.params_dump import rules
from tests.workflow.test_params_unchanged import FIXTURES

# rules that only name targets (`snakemake all`, `snakemake train_champion`, ...): no files
TARGETS = {"all", "sweep", "adapt_all", "evaluate_reference_only"}


def undeclared(workflow_rules: dict[str, dict], out: str) -> list[str]:
    """One line per rule whose files are not the layout's: a rule missing from it, an output,
    log or benchmark it does not name."""
    lay, problems = Layout(out), []
    for name, r in sorted(workflow_rules.items()):
        files = [*r["output"], *r["log"], *([r["benchmark"]] if r["benchmark"] else [])]
        if not files and (name in TARGETS or name.startswith(("train_", "evaluate_"))):
            continue
        if name not in RULES:
            problems.append(
                f"rule {name} writes {files[:2]}, but arctax.layout.RULES has no {name}"
            )
            continue
        want = {
            "output": sorted(lay.outputs(name).values()),
            "log": [lay.log(name)],
            "benchmark": lay.benchmark(name) if RULES[name].benchmark else None,
        }
        got = {"output": sorted(r["output"]), "log": r["log"], "benchmark": r["benchmark"]}
        problems += [
            f"rule {name}: {k} {got[k]} != the layout's {want[k]}"
            for k in want
            if got[k] != want[k]
        ]
    return problems


@pytest.fixture(scope="module")
def workflow_rules(tmp_path_factory) -> dict[str, dict]:
    w = tmp_path_factory.mktemp("w")
    (w / "config").symlink_to(REPO / "config")
    return rules(w, "all", ["config/demo.yaml"])


def test_every_rule_of_the_workflow_writes_where_the_layout_says(workflow_rules):
    assert {"train", "adapt", "generate_rearc", "sweep_worker"} <= set(workflow_rules)
    assert undeclared(workflow_rules, "results/demo") == []


def test_a_rule_the_layout_does_not_name_fails():
    """A new rule (or a path changed in a rule file alone) is named, with the fix."""
    train = {"output": [Layout("r").output("train", "best")], "log": [], "benchmark": None}
    new = {"output": ["r/new/{x}.json"], "log": ["r/logs/new/{x}.log"], "benchmark": None}
    got = undeclared({"train": train, "new_rule": new}, "r")
    assert got[0].startswith("rule new_rule writes") and "RULES has no new_rule" in got[0]
    assert got[1].startswith("rule train: output") and len(got) == 4  # outputs, log, benchmark


# scenario -> (its overlay after config/demo.yaml, overrides): each a dry run recorded in
# tests/workflow/params (re-arc: tests/fake_rearc's five tasks, two per job)
FAKE_REARC = {"data": {"rearc": {"repo": str(REPO / "tests" / "fake_rearc"), "tasks_per_job": 2}}}
STATUS_SCENARIOS = {
    "demo": ("config/demo.yaml", None),
    "ladder": ("config/ladder.yaml", None),
    "ladder_as_run": ("config/ladder_as_run.yaml", None),
    "rearc": ("config/rearc.yaml", FAKE_REARC),
}


@pytest.mark.parametrize("name", list(STATUS_SCENARIOS))
def test_status_names_every_job_of_a_dry_run(tmp_path, name):
    """`arctax status` lists every job the workflow plans (tests/workflow/params/<name>.json:
    the dry run, held to the workflow by test_params_unchanged), each once: the shards of an
    adapted run counted from the prepared test set, re-arc's from the checkout."""
    overlay, over = STATUS_SCENARIOS[name]
    s = load_settings(REPO / "config/demo.yaml", REPO / overlay, overrides=over)
    run = tmp_path / "results" / s.run
    manifest = Path(Layout(run).output("prepare_test", "manifest", test_set="arcagi1_eval"))
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"splits": {"test": [f"{i:08x}" for i in range(60)]}}))
    dag = {j for j in json.loads((FIXTURES / f"{name}.json").read_text()) if _rule(j) in RULES}
    listed = [j.key for j in st.study_jobs(s, run)]
    assert sorted(set(listed)) == sorted(dag) and len(listed) == len(set(listed))


def _rule(key: str) -> str:
    return key.split("[")[0]


def test_status_names_every_job_of_the_sweep_once_it_began(tmp_path):
    s = load_settings(REPO / "config/demo.yaml", REPO / "config/sweep-demo.yaml")
    run = tmp_path / "results" / s.run
    (run / "sweep").mkdir(parents=True)
    dag = set(json.loads((FIXTURES / "sweep.json").read_text())) - {"sweep[]"}
    assert dag <= {j.key for j in st.study_jobs(s, run)}


def test_outputs_doc_is_the_layouts():
    """docs/OUTPUTS.md's table is made from the layout (make config-doc)."""
    doc = (REPO / "docs" / "OUTPUTS.md").read_text()
    assert "<!-- layout:" in doc and outputs_doc_text(doc) == doc, "run make config-doc"
