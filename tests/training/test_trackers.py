"""Trackers by config: W&B offline and MLflow file-store runs written by a real tiny training,
one run continued across a real stop (SIGTERM to the job's process group, exit 75) and
resume, and a tracker whose extra is missing refused when the config is checked."""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from arctax.cli import main
from arctax.config import ConfigError
from arctax.lifecycle import STOPPED_EXIT
from arctax.settings import load_settings
from tests.conftest import tiny_overrides
from tests.training.test_preemption import _no_leftover_trainings, children  # noqa: F401
from tests.training.test_preemption import start as start_training

CODE = (
    "import json, sys; from arctax.settings import load_settings\n"
    "from arctax.training.train import train\n"
    "o = json.loads(sys.argv[1])\n"
    "train(load_settings(overrides=o), 'decoder_only', 307, *sys.argv[2:6])\n"
)


def start(overrides: dict, data: Path, root: Path) -> subprocess.Popen:
    """A training (outputs, state, trackers under ``root``) in a process group of its own."""
    return start_training(
        overrides, data, root / "out", root / "state", root / "trackers", code=CODE
    )


def overrides(**trainer) -> dict:
    o = tiny_overrides(**trainer)
    o["run"] = "trk"
    o["trainer"]["loggers"] = ["csv", "wandb", "mlflow"]
    return o


def val_losses(path: Path) -> list[float]:
    with path.open() as f:
        return [float(r["val_loss"]) for r in csv.DictReader(f)]


def logged(pairs: list[tuple[int, float]], expected: list[float]) -> bool:
    """The (step, value) pairs are epochs 0..n-1 once each, in order, with metrics.csv's values."""
    steps = [s for s, _ in pairs]
    return steps == list(range(len(expected))) and [v for _, v in pairs] == pytest.approx(expected)


def wandb_records(path: str):
    """The protobuf records of a W&B ``.wandb`` file (LevelDB log blocks after a 7-byte
    header), as W&B's own reader parses them."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += block - pos % block
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def wandb_history(trackers: Path) -> tuple[set[str], list[tuple[int, float]]]:
    """(run ids, [(step, val_loss)] in the order logged) of every offline run folder."""
    ids, history = set(), []
    folders = sorted(glob.glob(str(trackers / "wandb" / "wandb" / "offline-run-*")))
    for folder in folders:
        for rec in wandb_records(glob.glob(f"{folder}/*.wandb")[0]):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                ids.add(rec.run.run_id)
            elif kind == "history":
                items = {"/".join(i.nested_key) or i.key: i.value_json for i in rec.history.item}
                history.append((int(items["_step"]), float(items["val_loss"])))
    return ids, history


def mlflow_runs(trackers: Path):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(trackers / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("arctax")
    return client, client.search_runs([exp.experiment_id])


# ---------------------------------------------------------------- config time


def test_a_missing_extra_is_refused_when_the_config_is_checked(monkeypatch, tmp_path, capsys):
    cfg = load_settings(overrides={"trainer": {"loggers": ["csv", "wandb", "mlflow"]}})
    real = importlib.util.find_spec
    cfg.trainer.check_trackers()  # installed here (the dev extra): accepted
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(
        ConfigError, match=r"trainer\.loggers.*wandb.*pip install 'arctax\[wandb\]'"
    ):
        cfg.trainer.check_trackers()
    load_settings().trainer.check_trackers()  # csv alone needs nothing
    # `arctax train` refuses it before reading any data (exit 2: a config error)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"trainer": {"loggers": ["wandb"]}}))
    args = ["--config", str(f), "train", "--model", "champion", "--data", str(tmp_path / "none")]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'arctax[wandb]'" in capsys.readouterr().err


def test_an_unknown_tracker_is_a_schema_error():
    with pytest.raises(ConfigError, match=r"trainer\.loggers"):
        load_settings(overrides={"trainer": {"loggers": ["neptune"]}})


# ---------------------------------------------------------------- real trainings


@pytest.mark.slow
def test_tiny_training_writes_a_wandb_offline_and_an_mlflow_file_store_run(tiny_data, tmp_path):
    o = overrides(max_epochs=2)
    o["trainer"]["loggers"].append("tensorboard")
    proc = start(o, tiny_data, tmp_path)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    trackers = tmp_path / "trackers"
    expected = val_losses(tmp_path / "out" / "metrics.csv")
    record = json.loads((tmp_path / "state" / "tracker.json").read_text())
    assert record["logged_epoch"] == 1 and record["name"] == "trk-decoder_only-seed307"
    ids, history = wandb_history(trackers)
    assert ids == {record["wandb_id"]}
    assert logged(history, expected)  # step = epoch, each once
    client, runs = mlflow_runs(trackers)
    assert [r.info.run_id for r in runs] == [record["mlflow_run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "trk-decoder_only-seed307"
    got = client.get_metric_history(run.info.run_id, "val_loss")
    assert logged([(m.step, m.value) for m in got], expected)
    assert run.data.params["config.trial69.batch_size"] == "32"  # config/config.yaml
    assert run.data.params["model"] == "decoder_only"
    assert int(run.data.tags["audit.deviations"]) >= 1  # max_epochs 2 instead of 100
    assert "max_epochs" in run.data.tags["audit.deviation_keys"]
    assert run.data.tags["audit.unexplained"] == ""
    assert "provenance.json" in [a.path for a in client.list_artifacts(run.info.run_id)]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tb,) = (trackers / "tensorboard" / "trk-decoder_only-seed307").iterdir()
    events = EventAccumulator(str(tb))
    events.Reload()
    assert logged([(e.step, e.value) for e in events.Scalars("val_loss")], expected)
    assert sorted(p.name for p in trackers.iterdir()) == ["mlruns", "tensorboard", "wandb"]
    assert not any((tmp_path / "state").glob("*wandb*"))  # tracker logs are not in .state


@pytest.mark.slow
def test_stopped_and_resumed_training_continues_the_same_tracker_runs(tiny_data, tmp_path):
    o = overrides(max_epochs=200, num_workers=2)
    proc = start(o, tiny_data, tmp_path)
    state = tmp_path / "state"
    deadline = time.monotonic() + 300
    while not ((state / "last.ckpt").exists() and len(children(proc.pid)) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)  # every process of the group, as scancel does
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == STOPPED_EXIT, log[-3000:]
    first = json.loads((state / "tracker.json").read_text())
    done = len(val_losses(state / "metrics.csv"))
    assert first["logged_epoch"] == done - 1
    client, runs = mlflow_runs(tmp_path / "trackers")
    assert [r.info.status for r in runs] == ["KILLED"]  # stopped, to be continued

    o["trainer"]["max_epochs"] = done + 2
    resumed = start(o, tiny_data, tmp_path)
    log, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resuming" in log, log[-3000:]
    expected = val_losses(tmp_path / "out" / "metrics.csv")
    assert len(expected) == done + 2
    client, runs = mlflow_runs(tmp_path / "trackers")
    assert [r.info.run_id for r in runs] == [first["mlflow_run_id"]]  # one run, the same
    assert runs[0].info.status == "FINISHED"
    got = client.get_metric_history(first["mlflow_run_id"], "val_loss")
    assert logged([(m.step, m.value) for m in got], expected)
    ids, history = wandb_history(tmp_path / "trackers")
    assert ids == {first["wandb_id"]}  # two attempts, two offline folders, one W&B run
    assert len(glob.glob(str(tmp_path / "trackers" / "wandb" / "wandb" / "offline-run-*"))) == 2
    assert logged(history, expected)  # steps continue, none twice
