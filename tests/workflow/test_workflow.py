"""The Snakemake workflow through its CLI: lint, DAG shape, config errors, profiles, and the
demo end to end with the local profile (cached artifacts, single-model re-runs, the user's
champion checkpoint left untouched, the report)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

# the demo, smaller still, for CI's 2 cores
E2E_OVERLAY = {
    "run": "e2e",
    "data": {"max_tasks": 16, "augment": {"copies": 0}},
    "trainer": {"max_epochs": 2},
    "eval": {"bootstrap_samples": 200, "gallery_tasks": 2},
    # the demo's adaptation, smaller: 4 tasks in 2 shards per adapted run
    "adapt": {"max_tasks": 4, "tasks_per_job": 2, "steps": 4, "augment_views": 2,
              "voting_views": 2},
}  # fmt: skip
ADAPT_JOBS = {"adapt": 8, "adapt_gather": 4, "compare_adapt": 1}  # 4 runs x 2 shards


def smk(*args: str, cwd: Path = REPO, timeout: int = 900, check: bool = True):
    """Run snakemake; return the completed process (stdout and stderr merged)."""
    res = subprocess.run(
        [SNAKEMAKE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"},  # this checkout
    )
    res.output = res.stdout + res.stderr
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{res.output[-4000:]}")
    return res


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run."""
    m = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+(\d+)", output, re.S)
    if not m:
        return {}
    return {r.split()[0]: int(r.split()[1]) for r in m.group(1).strip().splitlines()}


def test_lint_and_format_clean():
    res = smk("--lint", "--configfile", "config/demo.yaml")
    assert "Congratulations, your workflow is in a good condition!" in res.output
    fmt = subprocess.run(
        [str(Path(sys.executable).parent / "snakefmt"), "--check", "Snakefile", "workflow/rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stderr


def test_dry_run_dag_shape():
    off = 'adapt={"enabled": false}'
    res = smk("all", "-n", "--forceall", "--configfile", "config/demo.yaml", "--config", off)
    assert job_counts(res.output) == {
        "prepare_data": 1,
        "prepare_test": 1,
        "smoke_test": 3,
        "smoke_report": 1,
        "bootstrap_champion": 1,
        "train": 3,
        "evaluate": 3,
        "evaluate_reference": 1,
        "compare": 1,
        "all": 1,
    }
    many = smk(
        "all",
        "-n",
        "--forceall",
        "--configfile",
        "config/demo.yaml",
        "--config",
        "seeds=[1,2]",
        off,
    )
    c = job_counts(many.output)
    assert c["train"] == 6 and c["evaluate"] == 6 and c["prepare_data"] == 1


TWO_SETS = 'data={"test_sets": {"arcagi1_eval": "arcagi", "arcagi2_eval": "arcagi2"}}'


def test_each_test_set_is_prepared_evaluated_and_compared_apart():
    off = 'adapt={"enabled": false}'
    res = smk("all", "-n", "--forceall", "--configfile", "config/demo.yaml",
              "--config", off, TWO_SETS)  # fmt: skip
    c = job_counts(res.output)
    assert (c["prepare_data"], c["prepare_test"], c["train"]) == (1, 2, 3)
    assert (c["evaluate"], c["evaluate_reference"], c["compare"]) == (6, 2, 2)
    for name in ("arcagi1_eval", "arcagi2_eval"):
        assert f"results/demo/compare/{name}/summary.md" in res.output
        assert f"results/demo/eval/{name}/champion/seed307/summary.json" in res.output
        assert f"results/demo/data/test/{name}/test.npz" in res.output


@pytest.mark.slow  # ~25 s: five snakemake calls, no job run
def test_adding_the_val_test_set_plans_no_training(tmp_path):
    """Every output of the demo DAG made (empty files, then `--touch` in DAG order), a dry run
    with the val test set added plans its preparation, evaluations and comparison only."""
    args = ["-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config/config.yaml"),
            str(REPO / "config/demo.yaml"), "--config", 'adapt={"enabled": false}']  # fmt: skip
    listing = smk("all", "--summary", *args, cwd=tmp_path).stdout.splitlines()
    for line in listing[1:]:
        path = tmp_path / line.split("\t")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    smk("all", "--touch", "--cores", "1", *args, cwd=tmp_path)
    assert "Nothing to be done" in smk("all", "-n", *args, cwd=tmp_path).output
    val = 'data={"test_sets": {"arcagi1_eval": "arcagi", "val": "val"}}'
    res = smk("all", "-n", *args, val, cwd=tmp_path)
    assert job_counts(res.output) == {"prepare_test": 1, "evaluate": 3, "evaluate_reference": 1,
                                      "compare": 1, "all": 1}  # fmt: skip
    prep = res.output[res.output.index("checkpoint prepare_test:") :].split("output:")[0]
    assert "results/demo/data/val.npz" in prep  # it reads the training data's val split
    # the same dry run sees a change of the training data (the control: it can fail)
    (tmp_path / "results/demo/data/val.npz").touch()
    assert job_counts(smk("all", "-n", *args, val, cwd=tmp_path).output).get("train", 0) > 0


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ('{"test_sets": {"ho": "held_out"}}', "set data.held_out_fraction"),
        ('{"test_sets": {"a": "arcagi"}, "test_source": "arcagi2"}', "exclude each other"),
        ('{"test_sets": {"bad name": "arcagi"}}', "data.test_sets"),
        ('{"test_sets": {"v": "val"}}', "adapting on it would train on its answers"),
        ('{"rearc": {"repo": "/nowhere"}}', "set data.source: rearc"),
        ('{"source": "rearc"}', "'data.rearc.repo' is not set"),
        ('{"source": "rearc", "rearc": {"repo": "/nowhere"}}', "git clone"),
    ],
)
def test_test_set_and_rearc_errors_name_the_key(data, fragment):
    res = smk("all", "-n", "--configfile", "config/demo.yaml", "--config", f"data={data}",
              check=False)  # fmt: skip
    assert res.returncode != 0 and fragment in res.output, res.output[-2000:]
    assert len(res.output.splitlines()) < 15, res.output


def test_adapt_runs_on_one_test_set(tmp_path):
    res = smk("all", "-n", "--forceall", "--configfile", "config/demo.yaml",
              "--config", TWO_SETS, 'adapt={"test_set": "arcagi2_eval"}')  # fmt: skip
    c = job_counts(res.output)
    assert c["prepare_test"] == 2 and c["compare_adapt"] == 1
    gather = res.output[res.output.index("rule adapt_gather:") :]
    assert "results/demo/data/test/arcagi2_eval/test.npz" in gather.split("output:")[0]
    bad = smk("all", "-n", "--configfile", "config/demo.yaml",
              "--config", 'adapt={"test_set": "nope"}', check=False)  # fmt: skip
    assert bad.returncode != 0 and "config key 'adapt.test_set': 'nope'" in bad.output


def test_generating_rearc_plans_cpu_shards_before_the_training_data():
    """data.source: rearc with a checkout: 5 tasks at 2 per job = 3 CPU jobs, gathered, then
    prepare_data reads the folder (tests/fake_rearc stands in for re-arc)."""
    data = ('{"source": "rearc", "examples_per_task": 12, '
            '"rearc": {"repo": "tests/fake_rearc", "tasks_per_job": 2}}')  # fmt: skip
    res = smk("all", "-n", "--forceall", "--profile", "profiles/slurm", "--configfile",
              "config/demo.yaml", "--config", f"data={data}")  # fmt: skip
    c = job_counts(res.output)
    assert (c["generate_rearc"], c["rearc_gather"], c["prepare_data"]) == (3, 1, 1)
    for i in range(3):
        assert f"results/demo/rearc/shards/{i}-of-3.json" in res.output
    job = res.output[res.output.index("rule generate_rearc:") :].split("\n\n")[0]
    assert "gpu" not in job and "cpus_per_task=1" in job  # a CPU job, no GPU asked
    prep = res.output[res.output.index("rule prepare_data:") :].split("\n\n")[0]
    assert "input: results/demo/rearc/re_arc" in prep


def test_rule_order_in_the_dag():
    res = smk("all", "--rulegraph", "--configfile", "config/demo.yaml", "--forceall")
    edges = set(re.findall(r"(\d+) -> (\d+)", res.stdout))
    names = dict(re.findall(r'(\d+)\[label = "(\w+)"', res.stdout))
    named = {(names[a], names[b]) for a, b in edges}
    for edge in [
        ("prepare_data", "smoke_test"),
        ("prepare_data", "prepare_test"),
        ("prepare_test", "evaluate"),
        ("prepare_test", "evaluate_reference"),
        ("smoke_test", "train"),
        ("smoke_test", "smoke_report"),
        ("train", "evaluate"),
        ("evaluate", "compare"),
        ("evaluate_reference", "compare"),
        ("bootstrap_champion", "evaluate_reference"),
        ("compare", "all"),
    ]:
        assert edge in named, edge


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        (
            ["--config", "bogus=1"],
            "unknown config key 'bogus' in the top level; allowed keys: run,",
        ),
        (["--config", "seeds=[-1]"], "seeds"),
        # results/../data/train.npz would be the workflow's own folder (issue 36)
        (["--config", "run=.."], "config key 'run': '..' cannot name the folder results/<run>/"),
        (["--config", 'eval={"attempts": 3}'], "attempts"),
        (["--config", 'trial69={"batch_size": "many"}'], "batch_size"),
        (
            ["--config", 'trainer={"devices": 3}'],
            "trainer.devices: 3 cannot split trial69.batch_size",
        ),
    ],
)
def test_config_errors_name_the_key(override, fragment):
    res = smk("all", "-n", "--configfile", "config/demo.yaml", *override, check=False)
    assert res.returncode != 0 and fragment in res.output


def test_a_config_files_wrong_type_is_an_error_but_a_command_line_string_is_read(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text('trial69:\n  batch_size: "32"\n')
    res = smk("all", "-n", "--configfile", "config/demo.yaml", str(overlay), check=False)
    assert (
        res.returncode != 0 and "config key 'trial69.batch_size': '32' is not of type" in res.output
    )
    ok = smk(
        "all", "-n", "--configfile", "config/demo.yaml", "--config", 'trial69={"batch_size": "32"}'
    )
    assert ok.returncode == 0  # --config hands every nested value over as a string


def test_an_unknown_key_is_one_short_message(tmp_path):
    overlay = tmp_path / "typo.yaml"
    overlay.write_text("trainer:\n  max_epoch: 3\n")
    res = smk("all", "-n", "--configfile", "config/demo.yaml", str(overlay), check=False)
    assert res.returncode != 0
    assert "unknown config key 'trainer.max_epoch' in 'trainer'; allowed keys:" in res.output
    assert "max_epochs" in res.output and "$schema" not in res.output
    assert len(res.output.splitlines()) < 15, res.output  # not a schema dump


def _original_like(path: Path) -> None:
    """A file with the original internal codebase's structure (key names from the shared map
    when present, else a few of them)."""
    import torch

    keys = REPO.parent / "shared/data/original/champion_bootstrap_checkpoint_keys.txt"
    sd = {"cebr_alpha": torch.zeros(()), "core_model.bos_embed": torch.zeros(160)}
    if keys.is_file():
        for name, shape in re.findall(
            r"^\s+- (\S+)\n\s+Shape: \(([\d, ]*)\)", keys.read_text(), re.M
        ):
            sd[name] = torch.zeros(tuple(int(x) for x in shape.replace(" ", "").split(",") if x))
    torch.save({"epoch": 3, "state_dict": sd, "hyper_parameters": {"model": {}}}, path)


def test_an_original_checkpoint_stops_the_slurm_dry_run_with_the_ways_forward(tmp_path):
    import time

    ckpt = tmp_path / "champion_bootstrap.ckpt"
    _original_like(ckpt)
    champ = f'{{"checkpoint": "{ckpt}", "bootstrap": false}}'
    t0 = time.perf_counter()
    res = smk(
        "all", "-n", "--profile", "profiles/slurm", "--configfile", "config/demo.yaml",
        "--config", f"champion={champ}", check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert res.returncode != 0
    assert f"'champion.checkpoint' points at '{ckpt}'" in res.output
    assert "original internal codebase" in res.output
    for way in ("champion.predictions: PATH", "champion.adapter:", "champion.bootstrap: true"):
        assert way in res.output
    assert "rule train" not in res.output  # stopped before planning any job
    print(f"dry run with an original-codebase checkpoint stopped after {seconds:.2f} s")
    # the same file with bootstrap: true is ignored (neither read nor in the DAG)
    boot = f'{{"checkpoint": "{ckpt}", "bootstrap": true}}'
    ok = smk(
        "all",
        "-n",
        "--forceall",
        "--configfile",
        "config/demo.yaml",
        "--config",
        f"champion={boot}",
    )
    assert job_counts(ok.output)["bootstrap_champion"] == 1


def test_a_champion_checkpoint_naming_code_stops_the_dry_run_before_importing_it(tmp_path):
    from tests.evaluation.conftest import evil_code, save_evil_ckpt

    cls, _, marker = evil_code(tmp_path)
    ckpt = save_evil_ckpt(tmp_path / "evil.ckpt", cls)
    champ = f'{{"checkpoint": "{ckpt}", "bootstrap": false}}'
    res = smk("all", "-n", "--configfile", "config/demo.yaml", "--config", f"champion={champ}",
              check=False)  # fmt: skip
    assert res.returncode != 0 and not marker.exists()
    assert f"{ckpt}: refused before importing anything" in res.output
    assert repr(cls) in res.output and "'models.mine.class" in res.output
    assert "rule train" not in res.output  # stopped before planning any job


def test_missing_champion_without_bootstrap_is_a_dag_error(tmp_path):
    res = smk(
        "all",
        "-n",
        "--configfile",
        "config/demo.yaml",
        "--config",
        'champion={"bootstrap": false, "checkpoint": "nowhere/champ.ckpt"}',
        check=False,
    )
    assert res.returncode != 0
    assert "champion.checkpoint" in res.output and "nowhere/champ.ckpt" in res.output


def test_slurm_profile_dry_run_without_a_cluster():
    res = smk(
        "all", "-n", "--profile", "profiles/slurm", "--configfile", "config/demo.yaml", "--forceall"
    )
    assert job_counts(res.output)["train"] == 3
    train = res.output[res.output.index("rule train:") :]
    assert "gpu=1" in train and "slurm_extra=--signal=SIGUSR1@60" in train
    prof = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    for rule, r in prof["set-resources"].items():
        assert "tasks" not in r, rule  # --ntasks-per-gpu breaks srun
        extra = str(r.get("slurm_extra", ""))
        assert not re.search(r"--(gres|gpus|time|mem|export)", extra), rule
    # Measured traps (docs/SLURM.md): a default cpus_per_task overrides every cpus_per_gpu, and
    # sacct status polling hangs on a scancel'd job ("CANCELLED by <uid>").
    assert "cpus_per_task" not in prof["default-resources"]
    assert all(r.get("cpus_per_gpu", 0) >= 2 for r in prof["set-resources"].values() if "gpu" in r)
    assert prof["slurm-status-command"] == "squeue"


# ---------------------------------------------------------------- end to end (slow)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """A copy of the repository's files where the demo (smaller still) ran once."""
    root = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, root / f)
    (root / "config/e2e.yaml").write_text(yaml.safe_dump(E2E_OVERLAY))
    res = smk(
        "all",
        "--profile",
        "profiles/local",
        "--cores",
        "2",
        "--configfile",
        "config/demo.yaml",
        "config/e2e.yaml",
        cwd=root,
        timeout=1200,
    )
    return root, res


def run_e2e(root: Path, *args: str, check: bool = True):
    return smk(
        "all",
        "--profile",
        "profiles/local",
        "--cores",
        "2",
        *args,
        "--configfile",
        "config/demo.yaml",
        "config/e2e.yaml",
        cwd=root,
        check=check,
    )


@pytest.mark.slow
def test_demo_runs_the_whole_dag(e2e):
    root, res = e2e
    out = root / "results/e2e"
    for f in [
        "smoke/report.json",
        "compare/arcagi1_eval/summary.md",
        "compare/arcagi1_eval/summary.csv",
        "compare/arcagi1_eval/audit.csv",
        "compare/arcagi1_eval/gallery.png",
        "bootstrap/champion_bootstrap.ckpt",
        "eval/arcagi1_eval/champion_bootstrap/per_task.csv",
    ]:
        assert (out / f).is_file(), f
    for m in ("champion", "encoder_decoder", "decoder_only"):
        assert (out / f"train/{m}/seed307/provenance.json").is_file()
    md = (out / "compare/arcagi1_eval/summary.md").read_text()
    assert "bootstrapped here, not the original Trial 69 weights" in md
    assert "**`adaptation.md`**" in md  # the summary points at the adaptation rows
    assert job_counts(res.output)["train"] == 3
    # the adaptation fan-out: 4 adapted runs x 2 shards of 2 tasks, gathered into three rows
    # (the base model's own two attempts, +vote, +adapt)
    runs = [f"{m}/seed307" for m in ("champion", "encoder_decoder", "decoder_only")]
    for run in [*runs, "champion_bootstrap/reference"]:
        shards = sorted((out / f"adapt/{run}/shards").glob("*.json"))
        assert [p.name for p in shards] == ["0-of-2.json", "1-of-2.json"], run
        assert [len(json.loads(p.read_text())["tasks"]) for p in shards] == [2, 2]
        for kind in ("adapt", "vote", "base2"):
            for f in ("per_task.csv", "summary.json", "submission.json"):
                assert (out / f"{kind}/{run}/{f}").is_file(), (kind, run, f)
    adaptation = (out / "compare/adaptation.md").read_text()
    assert "pass@1 (first attempt)" in adaptation and "pass@2 [95% CI]" in adaptation
    for row in (
        "champion",
        "champion+vote",
        "champion+adapt",
        "decoder_only+adapt",
        "champion_bootstrap+adapt",
    ):
        assert f"| {row} |" in adaptation
    gap = (out / "compare/gap.csv").read_text()
    assert gap.startswith("model,category,n_tasks") and (out / "compare/gap.png").stat().st_size


@pytest.mark.slow
def test_noop_rerun_says_nothing_to_do(e2e):
    root, _ = e2e
    res = run_e2e(root, "-n")
    assert "Nothing to be done" in res.output


@pytest.mark.slow
def test_forcing_one_model_reruns_only_that_model(e2e):
    root, _ = e2e
    res = run_e2e(root, "-n", "--forcerun", "results/e2e/train/decoder_only/seed307/best.ckpt")
    assert job_counts(res.output) == {"train": 1, "evaluate": 1, "compare": 1, "all": 1,
                                      "adapt": 2, "adapt_gather": 1, "compare_adapt": 1}  # fmt: skip
    jobs = re.findall(r"rule (\w+):\n(?:.*\n)*?\s+wildcards: (.*)", res.output)
    assert all("decoder_only" in w for r, w in jobs if r in ("train", "evaluate", "adapt"))


@pytest.mark.slow
def test_forcing_one_models_adaptation_reruns_only_it(e2e):
    root, _ = e2e
    shards = sorted(str(p.relative_to(root)) for p in
                    (root / "results/e2e/adapt/decoder_only/seed307/shards").glob("*.json"))  # fmt: skip
    res = run_e2e(root, "-n", "--forcerun", *shards)
    assert job_counts(res.output) == {"adapt": 2, "adapt_gather": 1, "compare_adapt": 1, "all": 1}
    jobs = re.findall(r"rule (adapt\w*):\n(?:.*\n)*?\s+wildcards: (.*)", res.output)
    assert jobs and all("label=decoder_only" in w for _, w in jobs)


@pytest.mark.slow
def test_changing_one_models_config_reruns_only_it(e2e):
    root, _ = e2e
    overlay = root / "config/e2e_change.yaml"
    overlay.write_text(yaml.safe_dump({"models": {"encoder_decoder": {"d_ff": 96}}}))
    res = smk(
        "all",
        "-n",
        "--profile",
        "profiles/local",
        "--configfile",
        "config/demo.yaml",
        "config/e2e.yaml",
        str(overlay),
        cwd=root,
    )
    c = job_counts(res.output)
    assert c["train"] == 1 and c["evaluate"] == 1 and "prepare_data" not in c
    assert "bootstrap_champion" not in c
    assert re.search(r"rule train:\n(?:.*\n)*?\s+wildcards: model=encoder_decoder", res.output)


def _dry_run_with(root: Path, name: str, overlay: dict) -> dict[str, int]:
    path = root / f"config/{name}.yaml"
    path.write_text(yaml.safe_dump(overlay))
    res = smk("all", "-n", "--profile", "profiles/local", "--configfile", "config/demo.yaml",
              "config/e2e.yaml", str(path), cwd=root)  # fmt: skip
    print(
        f"\n--- snakemake -n with {overlay}:\n" + res.output[res.output.find("Job stats") :][:600]
    )
    return job_counts(res.output)


TRAINING_JOBS = {"prepare_data", "smoke_test", "smoke_report", "train", "bootstrap_champion"}


def test_a_trainer_key_that_only_watches_trains_nothing_again(e2e):
    """The train params hold the trainer's method keys only (settings.Trainer roles): the
    stop margin, logging interval and tracker settings change nothing computed; the epochs do."""
    root, _ = e2e
    watch = {"trainer": {"save_margin_s": 60, "log_every_n_steps": 3,
                         "tracking": {"project": "elsewhere"}}}  # fmt: skip
    assert _dry_run_with(root, "watch", watch) == {}
    c = _dry_run_with(root, "epochs", {"trainer": {"max_epochs": 3}})
    assert c["train"] == 3 and c["bootstrap_champion"] == 1, c


@pytest.mark.slow
def test_changing_or_adding_a_test_set_trains_nothing_again(e2e):
    root, _ = e2e
    # the one-set form pointed elsewhere: only that test set's preparation, evaluations and
    # comparison (and the adaptation, which runs on the first test set)
    c = _dry_run_with(root, "other_set", {"data": {"test_source": "arcagi2"}})
    assert not TRAINING_JOBS & set(c), c
    assert (c["prepare_test"], c["evaluate"], c["evaluate_reference"], c["compare"]) == (1, 3, 1, 1)
    # a second test set beside the first: its jobs alone
    both = {"data": {"test_sets": {"arcagi1_eval": "arcagi", "arcagi2_eval": "arcagi2"}}}
    c = _dry_run_with(root, "two_sets", both)
    assert not TRAINING_JOBS & set(c), c
    assert c == {"prepare_test": 1, "evaluate": 3, "evaluate_reference": 1, "compare": 1,
                 "all": 1}  # fmt: skip
    # reserving tasks for a held_out test set changes the training data: that retrains, and
    # the dry run shows it (the test set only reads the reservation)
    held = {"data": {"held_out_fraction": 0.2,
                     "test_sets": {"arcagi1_eval": "arcagi", "held_out": "held_out"}}}  # fmt: skip
    c = _dry_run_with(root, "held_out", held)
    assert c["prepare_data"] == 1 and c["train"] == 3 and c["prepare_test"] == 2, c


@pytest.mark.slow
def test_the_val_test_set_shows_both_measurements_and_the_paired_rung_table(e2e):
    """The val split as a test set through the workflow (no training again): its summary.md
    puts the paper's measurement beside ours, compares every adjacent rung example by example
    with Holm's correction, and sets the paper's figures against the like-for-like column."""
    root, _ = e2e
    val = {"data": {"test_sets": {"arcagi1_eval": "arcagi", "val": "val"}}}
    path = root / "config/val.yaml"
    path.write_text(yaml.safe_dump(val))
    res = smk("all", "--profile", "profiles/local", "--cores", "2", "--configfile",
              "config/demo.yaml", "config/e2e.yaml", str(path), cwd=root, timeout=900)  # fmt: skip
    assert not TRAINING_JOBS & set(job_counts(res.output)), res.output[-2000:]
    md = (root / "results/e2e/compare/val/summary.md").read_text()
    print("\n" + md)  # the report, for the record (pytest -s)
    assert "grid acc, as the paper's code measured it [95% CI]" in md
    assert "grid acc, ours (shape, markers and first cell scored: stricter) [95% CI]" in md
    paired = md[md.index("## Paired differences") : md.index("## Against the paper")]
    assert "| encoder_decoder − decoder_only (ladder step) |" in paired
    assert "Holm's correction across the" in paired and "detectable (80% power)" in paired
    against = md[md.index("## Against the paper") :]
    assert "ours, as the paper's code measured it [95% CI]" in against
    assert "(detectable: ±" in against and "`data.val_tasks_sha256`" in against
    paired_csv = pd.read_csv(root / "results/e2e/compare/val/paired.csv")
    assert {"diff", "lo", "hi", "mdd", "p", "p_holm"} <= set(paired_csv.columns)
    assert (paired_csv["p_holm"].dropna() >= paired_csv["p"].dropna()).all()


def _summary_rows(root: Path) -> dict[str, dict]:
    import pandas as pd

    df = pd.read_csv(root / "results/e2e/compare/arcagi1_eval/summary.csv")
    return {r["model"]: r for r in df.to_dict(orient="records")}


SCORE_KEYS = ("grid_acc", "shape_acc", "cell_acc", "n_tasks")


@pytest.mark.slow
def test_each_reference_way_runs_to_a_report(e2e):
    """checkpoint, predictions and adapter (bootstrap is the demo's own): each runs only the
    reference's evaluation and the comparison, and ends in a report saying which way it was."""
    root, _ = e2e
    user = root / "my_champion.ckpt"
    shutil.copy2(root / "results/e2e/bootstrap/champion_bootstrap.ckpt", user)
    before = (sha(user), user.stat().st_mtime_ns)
    spec = "arctax.evaluation.adapters:arctax_checkpoint"
    own = "results/e2e/eval/arcagi1_eval/champion/seed307/submission.json"
    ways = {
        "checkpoint": ('{"checkpoint": "my_champion.ckpt", "bootstrap": false}',
                       "the user-supplied arctax checkpoint `my_champion.ckpt`"),
        "predictions": (f'{{"predictions": "{own}", "bootstrap": false}}',
                        f"answers from the predictions file `{own}`"),
        "adapter": (f'{{"checkpoint": "my_champion.ckpt", "adapter": "{spec}", "bootstrap": false}}',
                    f"run through the adapter `{spec}`"),
    }  # fmt: skip
    rows = {}
    for way, (champ, note) in ways.items():
        res = run_e2e(root, "--config", f"champion={champ}")
        c = job_counts(res.output)
        assert c["evaluate_reference"] == 1 and c["compare"] == 1, (way, c)
        # nothing of the trained models runs again; only the reference's own adaptation
        assert set(c) <= {"evaluate_reference", "compare", "all", "adapt", "adapt_gather",
                          "compare_adapt"}, (way, c)  # fmt: skip
        jobs = re.findall(r"rule (adapt\w*):\n(?:.*\n)*?\s+wildcards: (.*)", res.output)
        assert all("label=champion_bootstrap" in w for _, w in jobs), (way, jobs)
        md = (root / "results/e2e/compare/arcagi1_eval/summary.md").read_text()
        assert note in md and "bootstrapped here" not in md, (way, md[:600])
        rows[way] = _summary_rows(root)
        report = root / f"results/e2e/report-{way}.html"
        run_e2e(root, "--config", f"champion={champ}", "--report", str(report))
        assert report.stat().st_size > 100_000, way
    assert (sha(user), user.stat().st_mtime_ns) == before  # the user's file is never touched
    ref = "champion_bootstrap"
    for key in SCORE_KEYS:  # the same weights, answered through the adapter: the same scores
        assert rows["adapter"][ref][key] == rows["checkpoint"][ref][key], key
        # the champion's own submission.json as the reference reproduces the champion's scores
        assert rows["predictions"][ref][key] == rows["predictions"]["champion"][key], key
    assert [rows[w][ref]["answers_from"] for w in ways] == list(ways)


@pytest.mark.slow
def test_report_and_dag_pictures(e2e):
    root, _ = e2e
    report = root / "results/e2e/report.html"
    run_e2e(root, "--report", str(report))
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 100_000 and "summary.md" in html and "provenance.json" in html
    assert "adaptation.md" in html and "gap.png" in html  # the adaptation rows and gap plot
    dag = smk("all", "--dag", "--configfile", "config/demo.yaml", "config/e2e.yaml", cwd=root)
    assert dag.stdout.lstrip().startswith("digraph")
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dag.stdout, capture_output=True, text=True)
        assert svg.returncode == 0 and "<svg" in svg.stdout
