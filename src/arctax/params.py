"""What each job's results depend on, as the workflow hands it to Snakemake's params trigger.

One function per kind of job, each a composition of the settings blocks' roles
(:mod:`arctax.settings`): a key reaches the params of exactly the jobs its roles name, and a
changed value re-runs exactly those. Each returns a JSON string (a dict returned by a param
function would be iterated by Snakemake, keeping only its keys, which would hide a changed
value). ``tests/workflow/test_params_unchanged.py`` holds every job's params to recorded values.
Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from arctax.data.prepare import training_data
from arctax.data.prepare_test import test_set_params
from arctax.data.testsets import training_data_config
from arctax.plugins import source_sha256
from arctax.settings import Settings


def model_recipe(s: Settings, model: str) -> dict[str, Any]:
    """A model's constructor arguments, and for a model of your own its class and the sha256
    of the file defining it: editing that file re-runs the model's jobs."""
    m = s.model(model)
    recipe: dict[str, Any] = {"model": m.config()}
    if m.cls:
        recipe["class"] = m.cls
        recipe["code"] = source_sha256(m.cls)
    return recipe


def train(s: Settings, model: str) -> str:
    """A training's (and its smoke test's): the model's recipe, Trial 69, the trainer's method
    keys (a changed logger, tracker or stop margin trains nothing again) and the training
    data's settings (never the test sets)."""
    blocks = {"trial69": s.trial69.as_dict(), "trainer": s.trainer.method()}
    blocks["data"] = training_data_config(s.data)
    return json.dumps({**model_recipe(s, model), **blocks}, sort_keys=True)


def data(s: Settings) -> str:
    """The training data's preparation (the test sets' keys left out)."""
    return json.dumps(training_data(s.data, s.taxonomy), sort_keys=True)


def test_set(s: Settings, name: str) -> str:
    """One test set's preparation: its source and the data keys of role ``test_sets``."""
    return json.dumps(test_set_params(s.data, s.taxonomy, name), sort_keys=True)


def rearc_shard(s: Settings, ids: Sequence[str], code_sha256: str) -> str:
    """A re-arc shard's: its tasks, what their examples depend on, the checkout's code."""
    from arctax.data.rearc_generate import shard_params

    return shard_params(ids, s.data.rearc_generation(), code_sha256)


def adapt_shard(s: Settings) -> str:
    """An adaptation shard's (not which runs are adapted: adding a model adapts only it)."""
    return json.dumps(s.adapt_shard(), sort_keys=True)


def sweep(s: Settings, model: str) -> str:
    """A study's workers' (and report's): the sweep's method keys (its space, n_trials, the
    trials' training; not which studies, their worker count or origin) and the recipe and data
    of its model: a change re-runs the workers, which add only the missing trials."""
    blocks = {"trial69": s.trial69.as_dict(), "data": training_data_config(s.data)}
    return json.dumps(
        {"sweep": s.sweep.method(), **model_recipe(s, model), **blocks}, sort_keys=True
    )
