"""A model of one's own through the whole study, by config alone (docs/MODELS.md).

The model is a class in a file outside the repository, named in an overlay. Its mistakes stop
the dry run with one line; the demo DAG (smaller still) takes it through smoke, training,
evaluation, adaptation and the comparison to a report; its targets and `--forcerun` reach it
alone.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO
from tests.models.own_models import write
from tests.workflow.test_workflow import job_counts, smk

RUN = "own"


def overlay(tmp_path, block: dict, **extra) -> str:
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump({"models": {"mine": block}, **extra}))
    return str(path)


@pytest.mark.parametrize(
    ("block", "fragment"),
    [
        ({"class": "{dir}/nope.py:Tiny"}, "config key 'models.mine.class'"),
        ({"class": "{own}:Tiny", "d_mdl": 8}, "config block 'models.mine' does not fit Tiny("),
        ({"class": "{own}:NoFormat"}, "lacks the model protocol (docs/MODELS.md)"),
        ({"d_model": 8}, "config key 'models.mine': 'class' is a required property"),
    ],
)
def test_a_bad_model_stops_the_dry_run_with_one_line(tmp_path, block, fragment):
    own = write(tmp_path)
    block = {k: v.format(own=own, dir=tmp_path) if isinstance(v, str) else v
             for k, v in block.items()}  # fmt: skip
    res = smk("all", "-n", "--configfile", "config/demo.yaml", overlay(tmp_path, block),
              check=False)  # fmt: skip
    assert res.returncode != 0 and fragment in res.output, res.output[-2000:]
    assert "Traceback" not in res.output


def test_its_targets_exist_and_it_is_in_every_stage(tmp_path):
    own = write(tmp_path)
    o = overlay(tmp_path, {"class": f"{own}:Tiny", "d_model": 32}, adapt={"models": ["mine"]})
    res = smk("all", "-n", "--forceall", "--configfile", "config/demo.yaml", o)
    c = job_counts(res.output)
    assert c["train"] == 4 and c["evaluate"] == 4 and c["smoke_test"] == 4
    for rule in ("smoke_test", "train", "evaluate"):
        assert re.search(rf"rule {rule}:\n(?:.*\n)*?\s+wildcards: .*model=mine", res.output), rule
    one = smk("train_mine", "-n", "--forceall", "--configfile", "config/demo.yaml", o)
    assert job_counts(one.output)["train"] == 1
    sweep = smk("sweep", "-n", "--configfile", "config/demo.yaml", o, "--config",
                'sweep={"models": ["mine"], "space": {"models.mine.d_model": '
                '{"type": "int", "low": 16, "high": 32, "step": 16}}}')  # fmt: skip
    assert job_counts(sweep.output)["sweep_worker"] >= 1


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The demo (tiny) with the champion, the reference and the model of one's own."""
    root = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    for f in files:
        if (REPO / f).is_file():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, root / f)
    outside = tmp_path_factory.mktemp("lab")  # not below the repository copy
    cfg = {
        "run": RUN,
        "data": {"max_tasks": 12, "augment": {"copies": 0}},
        "trainer": {"max_epochs": 2},
        "models": {"encoder_decoder": None, "decoder_only": None,
                   "mine": {"class": f"{write(outside)}:Tiny", "d_model": 32}},
        "eval": {"bootstrap_samples": 200, "gallery_tasks": 2},
        "adapt": {"models": ["mine"], "reference": False, "max_tasks": 2, "tasks_per_job": 1,
                  "steps": 2, "augment_views": 2, "voting_views": 2},
    }  # fmt: skip
    (root / "own.yaml").write_text(yaml.safe_dump(cfg))
    args = ("--profile", "profiles/local", "--cores", "2", "--configfile", "config/demo.yaml",
            "own.yaml")  # fmt: skip
    smk("all", *args, cwd=root, timeout=1500)
    smk("all", *args, "--report", f"results/{RUN}/report.html", cwd=root, timeout=600)
    return root, args


@pytest.mark.slow
@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_it_runs_through_the_demo_dag_to_a_report(study):
    import pandas as pd

    root, _ = study
    out = root / "results" / RUN
    assert (out / "report.html").stat().st_size > 0
    summary = pd.read_csv(out / "compare/arcagi1_eval/summary.csv").set_index("model")
    assert list(summary.index) == ["champion_bootstrap", "champion", "mine"]
    assert summary.loc["mine", "parameters"] > 0 and summary.loc["mine", "size_vs_champion"] < 0
    md = (out / "compare/arcagi1_eval/summary.md").read_text()
    assert "| mine |" in md and "mine is not size-matched" in md  # a tiny model: flagged
    smoke = json.loads((out / "smoke/report.json").read_text())["models"]["mine"]
    assert smoke["ok"] and smoke["checks"]["protocol"] == "ok", smoke["checks"]
    adaptation = (out / "compare/adaptation.md").read_text()
    assert "| mine+adapt |" in adaptation and "| mine+vote |" in adaptation
    assert (out / "train/mine/seed307/provenance.json").read_text().count("Tiny") >= 1


@pytest.mark.slow
@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_forcing_it_reruns_only_it(study):
    root, args = study
    res = smk("all", "-n", *args, "--forcerun", f"results/{RUN}/train/mine/seed307/best.ckpt",
              cwd=root)  # fmt: skip
    c = job_counts(res.output)
    assert c["train"] == 1 and c["evaluate"] == 1 and "bootstrap_champion" not in c
    assert all("mine" in w for r, w in re.findall(r"rule (\w+):\n(?:.*\n)*?\s+wildcards: (.*)",
                                                   res.output) if r in ("train", "evaluate"))  # fmt: skip
