"""What a study leaves: ``trials.csv``, ``best.yaml`` (a config overlay) and three plots."""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # a batch job has no display

import matplotlib.pyplot as plt
import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from arctax.config import deep_merge, validate_config
from arctax.io import atomic_write, atomic_write_text
from arctax.search import SearchError
from arctax.search.space import Param, apply_params, parse_space
from arctax.search.storage import describe, load_study
from arctax.settings import Settings

FIXED_COLUMNS = [
    "number",
    "state",
    "value",
    "epochs",
    "duration_s",
    "worker",
    "slurm_job_id",
    "host",
    "retry_of",
    "fail_reason",
    "started",
    "completed",
]


def trials_table(study: optuna.Study, keys: list[str]) -> pd.DataFrame:
    """One row per trial (every state): the columns above, then one per searched key."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        owner = t.user_attrs.get("owner") or {}
        start, end = t.datetime_start, t.datetime_complete
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "epochs": len(t.intermediate_values),
                "duration_s": round((end - start).total_seconds(), 1) if start and end else None,
                "worker": owner.get("worker"),
                "slurm_job_id": owner.get("slurm_job_id"),
                "host": owner.get("host"),
                "retry_of": t.user_attrs.get("retry_of"),
                "fail_reason": t.user_attrs.get("fail_reason"),
                "started": start.isoformat(timespec="seconds") if start else None,
                "completed": end.isoformat(timespec="seconds") if end else None,
                **{k: t.params.get(k) for k in keys},
            }
        )
    df = pd.DataFrame(rows, columns=FIXED_COLUMNS + keys)
    # integers stay integers beside empty cells (a float column would print 5.0)
    return df.astype({"worker": "Int64", "retry_of": "Int64", "slurm_job_id": "string"})


def best_overlay(s: Settings, model: str, study: optuna.Study, storage: str) -> dict:
    """The best complete trial as a config overlay: its values under their own keys (a list
    item's whole list), ``run: <run>-best-<model>`` so that its training gets its own results
    folder, and ``sweep.origin`` (recorded in every training's provenance.json).

    The storage is data: a value it holds goes into ``best.yaml`` only under a key the config's
    ``sweep.space`` searches, and within that entry's range or choices; anything else (a
    ``models.<name>.class`` a storage file was given, say) is one :class:`SearchError`."""
    best = study.best_trial
    space = parse_space(s, model)
    for key, value in best.params.items():
        why = "not a key sweep.space searches" if key not in space else _outside(space[key], value)
        if why:
            raise SearchError(
                f"study '{study.study_name}' ({storage}): its best trial {best.number} sets "
                f"{key} = {value!r}, {why}; the config, never the study's storage, chooses "
                "what best.yaml may set: run the study again into a fresh sweep folder"
            )
    full = apply_params(s.raw, best.params)
    values: dict[str, Any] = {}
    for key in best.params:
        src: Any = full
        dst = values
        for part in key.split("."):
            src = src[part]
            if not isinstance(src, Mapping):  # a value, or the list holding the searched item
                dst[part] = copy.deepcopy(src)
                break
            dst = dst.setdefault(part, {})
    origin = {
        "study": study.study_name,
        "storage": storage,
        "trial": best.number,
        "value": best.value,
    }
    return {"run": f"{s.run}-best-{model}", **values, "sweep": {"origin": origin}}


def _outside(param: Param, value: Any) -> str | None:
    """Why ``value`` is not one ``param`` can take (None: it is): one of its choices (of the
    same type: ``True`` is not ``1``), else a number of its type (an int for ``type: int``,
    never ``16.0``), within its range and on its grid (``low`` + a multiple of ``step``)."""
    if param.type == "categorical":
        same = any(type(value) is type(c) and value == c for c in param.choices)
        return None if same else f"not one of its choices {list(param.choices)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return "not a number"
    if param.type == "int" and not isinstance(value, int):
        return f"a {type(value).__name__}, not an integer (the entry is type: int)"
    if not param.low <= value <= param.high:  # type: ignore[operator]
        return f"outside its range [{param.low}, {param.high}]"
    if param.step is not None:
        k = (value - param.low) / param.step  # type: ignore[operator]
        if abs(k - round(k)) > 1e-9 * max(1.0, abs(k)):
            return f"off its grid ({param.low} + a multiple of step {param.step})"
    return None


def _header(study: optuna.Study, n_trials: int, storage: str) -> str:
    best = study.best_trial
    count = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return (
        f"# Best trial of the Optuna study '{study.study_name}' ({storage}):\n"
        f"# trial {best.number}, val_loss {best.value:.6g} after "
        f"{len(best.intermediate_values)} epochs; {count['COMPLETE']} complete, "
        f"{count['PRUNED']} pruned, {count['FAIL']} failed trials (n_trials {n_trials}).\n"
        "# A config overlay: give it last, after the overlays the study ran with, e.g.\n"
        "#   snakemake all --configfile config/config.yaml <this file>\n"
        "# The training records these values in provenance.json (trial69.* in its audit).\n"
    )


def _save(ax: Any, path: Path) -> None:
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _message_plot(path: Path, title: str, text: str) -> None:
    _, ax = plt.subplots(figsize=(6, 2.5))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    _save(ax, path)


def _short(key: str) -> str:
    """``models.champion.d_model`` -> ``d_model``, ``trial69.optimizer.betas.0`` -> ``betas.0``."""
    parts = key.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def plot_study(study: optuna.Study, history: Path, importances: Path, parallel: Path) -> None:
    """Optimisation history, parameter importances (PED-ANOVA, numpy only) and parallel
    coordinates, with ``optuna.visualization.matplotlib`` (experimental API; warning muted)."""
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # a key with one value in every trial (few trials) gets a flat axis: harmless
        warnings.filterwarnings("ignore", message="Attempting to set identical low and high")
        _save(ovm.plot_optimization_history(study, target_name="val_loss"), history)
        ax = ovm.plot_parallel_coordinate(study, target_name="val_loss")
        names = ["val_loss", *sorted(study.best_trial.params)]  # Optuna's axis order
        if len(ax.get_xticks()) == len(names):  # its labels are cut at 20 characters
            ax.set_xticks(ax.get_xticks(), [_short(n) for n in names])
        ax.figure.set_size_inches(max(8.0, 1.2 * len(names)), 5.5)
        _save(ax, parallel)
        try:
            _save(ovm.plot_param_importances(study, target_name="val_loss"), importances)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            # too few complete trials, or no value varied: say so in the figure
            _message_plot(
                importances,
                "Hyper-parameter importances",
                f"not computable from {len(complete)} complete trials ({e})",
            )


def write_report(
    s: Settings,
    model: str,
    sweep_dir: str | Path,
    trials_csv: str | Path,
    best_yaml: str | Path,
    history: str | Path,
    importances: str | Path,
    parallel: str | Path,
) -> dict[str, Any]:
    """Write the study's outputs; refuse a study short of ``sweep.n_trials`` finished trials."""
    study = load_study(sweep_dir, s.run, model)
    n_trials = s.sweep.n_trials
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if len(finished) < n_trials:
        raise SearchError(
            f"study '{study.study_name}' has {len(finished)} finished trials of n_trials "
            f"{n_trials}: run `snakemake sweep` again to add the missing ones"
        )
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise SearchError(f"study '{study.study_name}': every trial was pruned or failed")
    storage = describe(sweep_dir)
    keys = list(parse_space(s, model))
    df = trials_table(study, keys)
    atomic_write(trials_csv, lambda tmp: df.to_csv(tmp, index=False))
    overlay = best_overlay(s, model, study, storage)
    validate_config(deep_merge(s.raw, overlay))  # what `--configfile ... best.yaml` will check
    body = yaml.safe_dump(overlay, sort_keys=False, default_flow_style=None)
    atomic_write_text(best_yaml, _header(study, n_trials, storage) + body)
    plot_study(study, Path(history), Path(importances), Path(parallel))
    return {"finished": len(finished), "best": overlay}
