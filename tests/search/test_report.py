"""A study's outputs: trials.csv, best.yaml (valid overlay; a training from it records the
values in provenance.json) and the plots."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from arctax.config import DEFAULT_CONFIG
from arctax.search import SearchError
from arctax.search.report import FIXED_COLUMNS, write_report
from arctax.search.storage import load_study
from arctax.search.worker import run_worker
from arctax.settings import load_settings
from arctax.training.train import train
from tests.conftest import tiny_overrides
from tests.search.helpers import MODEL, quadratic, sweep_cfg

OUTS = ("trials.csv", "best.yaml", "history.png", "importances.png", "parallel.png")


@pytest.fixture(scope="module")
def study_dir(tiny_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    cfg = sweep_cfg(n_trials=5)
    run_worker(cfg, MODEL, tiny_data, d, 0, objective=quadratic(cfg))
    write_report(cfg, MODEL, d, *(d / f for f in OUTS))
    return d


def test_trials_csv_has_every_trial_with_its_values(study_dir):
    df = pd.read_csv(study_dir / "trials.csv")
    study = load_study(study_dir, "t", MODEL)
    assert list(df["number"]) == [0, 1, 2, 3, 4] and set(df["state"]) == {"COMPLETE"}
    assert list(df.columns[: len(FIXED_COLUMNS)]) == FIXED_COLUMNS
    for t in study.trials:
        row = df.iloc[t.number]
        assert row["value"] == pytest.approx(t.value)
        assert row["trial69.optimizer.lr"] == pytest.approx(t.params["trial69.optimizer.lr"])
        assert row["worker"] == 0 and row["duration_s"] >= 0


def test_plots_are_pngs(study_dir):
    for name in ("history.png", "importances.png", "parallel.png"):
        assert (study_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_best_yaml_is_a_valid_overlay_of_the_best_trial(study_dir):
    text = (study_dir / "best.yaml").read_text()
    best = load_study(study_dir, "t", MODEL).best_trial
    assert text.startswith("# Best trial of the Optuna study 't-champion'")
    overlay = yaml.safe_load(text)
    assert overlay["run"] == "t-best-champion"
    assert overlay["sweep"]["origin"]["trial"] == best.number
    assert overlay["trial69"]["optimizer"]["betas"][0] == best.params["trial69.optimizer.betas.0"]
    cfg = load_settings(DEFAULT_CONFIG, study_dir / "best.yaml")  # the schema accepts it
    assert cfg.trial69.optimizer.lr == best.params["trial69.optimizer.lr"]
    assert cfg.models[MODEL].args["d_model"] == best.params["models.champion.d_model"]


def test_training_from_best_yaml_records_the_values_in_provenance(study_dir, tiny_data, tmp_path):
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(tiny_overrides(max_epochs=1, limit_train_batches=2)))
    cfg = load_settings(DEFAULT_CONFIG, tiny, study_dir / "best.yaml")  # as `snakemake all` would
    best = load_study(study_dir, "t", MODEL).best_trial
    train(cfg, MODEL, 307, tiny_data, tmp_path / "run")
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    rows = {r["key"]: r for r in prov["audit"]}
    lr = best.params["trial69.optimizer.lr"]
    assert rows["optimizer.lr"]["actual"] == pytest.approx(lr) and not rows["optimizer.lr"]["match"]
    assert "config override: trial69.optimizer.lr" in rows["optimizer.lr"]["reason"]
    beta1 = best.params["trial69.optimizer.betas.0"]
    assert rows["optimizer.betas"]["actual"][0] == pytest.approx(beta1)
    assert prov["config"]["models"][MODEL]["d_model"] == best.params["models.champion.d_model"]
    assert prov["config"]["sweep"]["origin"]["trial"] == best.number


def test_a_study_short_of_n_trials_is_not_reported(study_dir, tmp_path):
    cfg = sweep_cfg(n_trials=9)
    with pytest.raises(SearchError, match="5 finished trials of n_trials 9"):
        write_report(cfg, MODEL, study_dir, *(tmp_path / f for f in OUTS))


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"models.champion.class": "evil.py:Champion"}, "not a key sweep.space searches"),
        ({"run": "../../elsewhere"}, "not a key sweep.space searches"),
        ({"trial69.optimizer.lr": 1e9}, "outside its range"),
        ({"models.champion.d_model": 36}, "off its grid (32 + a multiple of step 16)"),
        ({"models.champion.d_model": 32.0}, "a float, not an integer"),
        ({"trial69.batch_size": 8.0}, "not one of its choices"),
        ({"trial69.batch_size": True}, "not one of its choices"),
    ],
)
def test_best_yaml_takes_from_the_storage_only_what_the_config_searches(params, fragment):
    """A storage (data from elsewhere) whose best trial sets a key the config does not search,
    or a value out of its range, writes no best.yaml."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    from arctax.search.report import best_overlay

    cfg = sweep_cfg(n_trials=1)
    study = optuna.create_study(study_name="t-champion")
    dists = {k: CategoricalDistribution([v]) for k, v in params.items()}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=-1.0))
    with pytest.raises(SearchError) as e:
        best_overlay(cfg, MODEL, study, "forged.db")
    msg = str(e.value)
    assert "forged.db" in msg and next(iter(params)) in msg and fragment in msg
