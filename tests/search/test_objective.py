"""One trial trains for real (tiny model): val_loss reported per epoch, pruning, trial config."""

from __future__ import annotations

import copy
import os

import optuna
import pytest

from arctax.search.objective import train_trial, trial_config
from arctax.search.space import parse_space, suggest
from arctax.search.worker import make_pruner
from arctax.settings import load_settings
from tests.search.helpers import MODEL, sweep_cfg


def run_trial(tiny_data, tmp_path, cfg, pruner):
    study = optuna.create_study(direction="minimize", pruner=pruner)
    trial = study.ask()
    params = suggest(trial, parse_space(cfg, MODEL))
    tcfg = trial_config(cfg, params)
    return (
        study,
        trial,
        params,
        tcfg,
        lambda: train_trial(tcfg, MODEL, tiny_data, tmp_path / "w", trial),
    )


def test_trial_config_applies_values_and_the_short_training(tiny_data, tmp_path):
    cfg = sweep_cfg(max_epochs=3, limit_train_batches=3)
    before = copy.deepcopy(cfg)
    *_, params, tcfg, _ = run_trial(tiny_data, tmp_path, cfg, optuna.pruners.NopPruner())
    assert tcfg.models[MODEL].args["d_model"] == params["models.champion.d_model"]
    assert tcfg.trial69.optimizer.betas == (params["trial69.optimizer.betas.0"], 0.999)
    assert tcfg.trainer.max_epochs == 3 and tcfg.trainer.limit_train_batches == 3
    assert cfg == before and cfg.raw == before.raw  # a trial does not change the study's


def test_each_epoch_is_reported_and_the_best_val_loss_returned(tiny_data, tmp_path):
    cfg = sweep_cfg(max_epochs=2)
    study, trial, _, _, train = run_trial(tiny_data, tmp_path, cfg, optuna.pruners.NopPruner())
    value = train()
    study.tell(trial, value)
    reported = study.trials[0].intermediate_values
    assert sorted(reported) == [0, 1]  # one val_loss per epoch, by epoch
    assert value == min(reported.values())
    assert not (tmp_path / "w").exists()  # scratch space removed


def test_a_pruned_trial_stops_after_the_epoch_the_pruner_rejects(tiny_data, tmp_path):
    # a real Optuna pruner that rejects any loss above 0: pruned after the first epoch
    cfg = sweep_cfg(max_epochs=3)
    pruner = optuna.pruners.ThresholdPruner(upper=0.0)
    study, trial, *_, train = run_trial(tiny_data, tmp_path, cfg, pruner)
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 0"):
        train()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert list(study.trials[0].intermediate_values) == [0]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_pruner_from_config(name, kind):
    sweep = load_settings(overrides={"sweep": {"pruner": name, "max_epochs": 5}}).sweep
    assert isinstance(make_pruner(sweep), kind)


@pytest.mark.slow
def test_a_trial_is_one_tracker_run_in_the_sweeps_group(tiny_data, tmp_path):
    """With trainer.loggers mlflow, each trial is a run named by its number, grouped by study,
    its values as parameters, each epoch once, closed FINISHED with its best val_loss."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    cfg = sweep_cfg(max_epochs=2).with_overrides({"trainer": {"loggers": ["csv", "mlflow"]}})
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    params = suggest(trial, parse_space(cfg, MODEL))
    trackers = tmp_path / "trackers"
    value = train_trial(trial_config(cfg, params), MODEL, tiny_data, tmp_path / "w", trial,
                        trackers_dir=trackers)  # fmt: skip
    client = MlflowClient(tracking_uri=(trackers / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("arctax").experiment_id])
    assert run.info.run_name == "t-sweep-champion-trial0" and run.info.status == "FINISHED"
    assert run.data.tags["arctax.group"] == "t-sweep-champion"
    assert run.data.tags["arctax.job_type"] == "sweep"
    assert run.data.params["trial.models.champion.d_model"] == str(
        params["models.champion.d_model"]
    )
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert steps == [0, 1]
    assert float(run.data.tags["best_val_loss"]) == pytest.approx(value)
