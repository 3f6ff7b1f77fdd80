"""Typed settings blocks: the schema is their one source of defaults and of their keys."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from arctax.adaptation.run import task_fingerprint
from arctax.config import (
    SCHEMA,
    ConfigError,
    fill_defaults,
    key_table,
    key_tables_text,
    load_config,
)
from arctax.settings import (
    METHOD,
    OBSERVE,
    PLAN,
    SHARDS,
    Adapt,
    Augment,
    Block,
    Champion,
    Data,
    EarlyStopping,
    Eval,
    Limits,
    Optimizer,
    Rearc,
    Scheduler,
    Settings,
    Sweep,
    Taxonomy,
    Tracking,
    Trainer,
    Trial69,
    load_settings,
)

# blocks whose every key has a schema default (config/config.yaml gives them as `{}`)
BLOCKS = [Adapt, Eval, Trainer, Sweep, Limits]
# every typed block, sub-blocks included: data, trial69 and champion hold keys the schema
# requires (config/config.yaml holds their values: Trial 69's exact recipe, the data source)
ALL_BLOCKS = [*BLOCKS, Data, Rearc, Augment, Trial69, Optimizer, Scheduler, EarlyStopping,
              Taxonomy, Champion, Tracking]  # fmt: skip


def _schema_block(name: str) -> dict:
    spec = yaml.safe_load(SCHEMA.read_text())
    for part in name.split("."):
        spec = spec["properties"][part]
    return spec


@pytest.mark.parametrize("cls", ALL_BLOCKS, ids=lambda c: c.BLOCK)
def test_a_block_has_exactly_the_schemas_keys(cls: type[Block]):
    assert set(cls.names()) == set(_schema_block(cls.BLOCK)["properties"])


@pytest.mark.parametrize("cls", ALL_BLOCKS, ids=lambda c: c.BLOCK)
def test_a_block_holds_the_schemas_defaults_and_none_of_its_own(cls: type[Block]):
    """No default lives in a dataclass: the block of a config giving only its required keys
    (their values from config/config.yaml), filled by the schema, holds every key the schema
    gives a default with that default (a sub-block: its own keys' defaults)."""
    assert not any(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )
    *parents, name = cls.BLOCK.split(".")
    spec = _schema_block(cls.BLOCK)
    shipped = load_config()
    for p in parents:
        shipped = shipped[p]
    raw = {k: shipped[name][k] for k in spec.get("required", [])}
    for p in reversed(parents):  # a sub-block's parent: its required keys from the config too
        pspec, pshipped = _schema_block(p), load_config()[p]
        raw = {**{k: pshipped[k] for k in pspec.get("required", [])}, name: raw}
        name = p
    filled = fill_defaults({name: raw})
    for p in cls.BLOCK.split(".")[:-1]:
        filled = filled[p]
    built = cls.from_block(filled[cls.BLOCK.split(".")[-1]]).as_dict()
    props = spec["properties"]
    defaults = {k: _default(props[k]) for k in cls.names() if "default" in props[k]}
    assert {k: built[k] for k in defaults} == defaults
    assert set(defaults) | set(spec.get("required", [])) == set(cls.names())  # none unset


def _default(spec: dict) -> object:
    """A key's schema default; a sub-block's (default {}) is its own keys' defaults."""
    if "properties" in spec and spec["default"] == {}:
        return {k: _default(v) for k, v in spec["properties"].items()}
    return spec["default"]


def test_a_partial_config_is_refused_naming_the_missing_keys():
    with pytest.raises(ConfigError, match=r"'adapt.rank'.*load_config"):
        Adapt.from_block({"steps": 3, "lr": 0.1})
    with pytest.raises(ConfigError, match="config block 'adapt' is missing"):
        Adapt.of({"eval": {}})
    full = Adapt.of(load_config()).as_dict()
    with pytest.raises(ConfigError, match=r"unknown 'adapt\.colour_view'"):
        Adapt.from_block({**full, "colour_view": True})


def test_the_block_is_frozen_and_its_lists_are_tuples():
    a = Adapt.of(load_config())
    assert isinstance(a.targets, tuple) and isinstance(a.models, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.steps = 1  # type: ignore[misc]


def test_every_key_has_one_role_and_the_fingerprints_follow_them(tmp_path):
    """A method key changes a task's fingerprint and a shard's params; a shards key only the
    shard's params; a plan key neither (adding a model to adapt.models adapts only it)."""
    assert set(Adapt.names(METHOD)) | set(Adapt.names(SHARDS)) | set(Adapt.names(PLAN)) == set(
        Adapt.names()
    )
    base = Adapt.of(load_config())
    changed = {
        METHOD: base.replace(steps=base.steps + 1),
        SHARDS: base.replace(tasks_per_job=base.tasks_per_job + 1),
        PLAN: base.replace(models=[*base.models, "mine"]),
    }
    assert changed[METHOD].method() != base.method()
    assert changed[METHOD].shard_params() != base.shard_params()
    assert changed[SHARDS].method() == base.method()
    assert changed[SHARDS].shard_params() != base.shard_params()
    assert changed[PLAN].method() == base.method()
    assert changed[PLAN].shard_params() == base.shard_params()


def test_a_task_fingerprint_reads_the_method_from_the_block(tiny_data):
    cfg = load_settings()
    fp = task_fingerprint("sha", cfg, tiny_data)
    other_plan = load_settings(overrides={"adapt": {"reference": not cfg.adapt.reference}})
    other_method = load_settings(overrides={"adapt": {"lr": cfg.adapt.lr * 2}})
    assert task_fingerprint("sha", other_plan, tiny_data) == fp
    assert task_fingerprint("sha", other_method, tiny_data) != fp


def test_config_readme_key_tables_are_the_schemas():
    """config/README.md's generated tables say what the schema says (make config-doc)."""
    readme = (SCHEMA.parents[2] / "config" / "README.md").read_text()
    assert key_tables_text(readme) == readme, "config/README.md is stale: run make config-doc"
    for cls in BLOCKS:  # each typed block's table is there, whole
        assert f"<!-- keys: {cls.BLOCK}" in readme
        assert key_table(cls.BLOCK) in readme
    assert "| `tracking.project` | `arctax` |" in key_table("trainer")  # a sub-block, one row a key


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.BLOCK)
def test_every_key_of_a_typed_block_is_documented_once_in_the_schema(cls: type[Block]):
    """Its description is its documentation; config/config.yaml restates none of its defaults
    (a third place that could disagree)."""
    props = _schema_block(cls.BLOCK)["properties"]
    assert all(props[k].get("description") for k in cls.names())
    for k in cls.names():  # and a sub-block's keys (its table rows)
        if props[k].get("default") == {} and "properties" in props[k]:
            assert all(v.get("description") for v in props[k]["properties"].values()), k
    shipped = yaml.safe_load((SCHEMA.parents[2] / "config" / "config.yaml").read_text())
    restated = [
        k for k, v in (shipped.get(cls.BLOCK) or {}).items() if props[k].get("default") == v
    ]
    on_purpose = {"adapt": ["enabled"]}  # shown: turning adaptation on is a choice
    assert restated == on_purpose.get(cls.BLOCK, [])


def test_the_trainer_keys_that_change_a_training_are_its_method():
    """Only the method keys reach the workflow's train params (common.smk's recipe): a logger,
    a tracker or the stop margin never trains again; processes, precision, epochs do."""
    assert set(Trainer.names(METHOD)) | set(Trainer.names(OBSERVE)) == set(Trainer.names())
    assert set(Trainer.names(OBSERVE)) == {
        "log_every_n_steps", "max_skipped_steps", "smaller_gpu", "save_margin_s", "loggers",
        "tracking",
    }  # fmt: skip
    base = Trainer.of(load_config())
    tracking = base.tracking.replace(project="x")
    assert base.replace(save_margin_s=60, tracking=tracking).method() == base.method()
    for change in ({"devices": 2}, {"max_epochs": 3}, {"cpu_precision": "bf16-mixed"},
                   {"compile": "inductor"}):  # fmt: skip
        assert base.replace(**change).method() != base.method(), change


def test_a_partial_trainer_block_is_refused_not_filled_in_by_the_library():
    """A notebook's hand-made config gets one error naming the missing keys, not the old
    library fallbacks (accelerator "auto", log_every_n_steps 10)."""
    cfg = load_config()
    cfg["trainer"] = {"accelerator": "cpu", "devices": 1}
    with pytest.raises(ConfigError, match=r"'trainer.cpu_precision'.*load_config"):
        Settings.of(cfg)  # where the library's blocks are built, once


def test_the_sweep_workers_params_are_the_sweeps_method_keys():
    """Which studies run, how many workers share one and a best.yaml's origin never re-run a
    study's workers; what the trials train does."""
    assert set(Sweep.names(PLAN)) == {"models", "workers"}
    assert set(Sweep.names(OBSERVE)) == {"origin"}
    base = Sweep.of(load_config())
    origin = {"study": "s", "trial": 1, "value": 0.5}
    same = base.replace(workers=base.workers + 1, models=["champion", "x"], origin=origin)
    assert same.method() == base.method()
    assert base.replace(max_epochs=3).method() != base.method()
    assert base.trial_training() == {
        "max_epochs": 20, "limit_train_batches": None, "limit_val_batches": None
    }  # fmt: skip
