"""Typed settings blocks: the schema is their one source of defaults and of their keys."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from arctax.adaptation.run import fingerprint
from arctax.config import (
    SCHEMA,
    ConfigError,
    fill_defaults,
    key_table,
    key_tables_text,
    load_config,
)
from arctax.settings import METHOD, PLAN, SHARDS, Adapt, Block

BLOCKS = [Adapt]


def _schema_block(name: str) -> dict:
    return yaml.safe_load(SCHEMA.read_text())["properties"][name]


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.BLOCK)
def test_a_block_has_exactly_the_schemas_keys(cls: type[Block]):
    assert set(cls.names()) == set(_schema_block(cls.BLOCK)["properties"])


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.BLOCK)
def test_a_block_built_from_nothing_holds_the_schemas_defaults(cls: type[Block]):
    """No default lives in the dataclass: an empty block filled by the schema builds it, and
    every value is the schema's default."""
    assert not any(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )
    props = _schema_block(cls.BLOCK)["properties"]
    built = cls.of(fill_defaults({cls.BLOCK: {}}))
    assert built.as_dict() == {k: props[k]["default"] for k in cls.names()}


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
    cfg = load_config()
    fp = fingerprint("sha", cfg, tiny_data)
    other_plan = load_config(overrides={"adapt": {"reference": not cfg["adapt"]["reference"]}})
    other_method = load_config(overrides={"adapt": {"lr": cfg["adapt"]["lr"] * 2}})
    assert fingerprint("sha", other_plan, tiny_data) == fp
    assert fingerprint("sha", other_method, tiny_data) != fp


def test_config_readme_key_tables_are_the_schemas():
    """config/README.md's generated tables say what the schema says (make config-doc)."""
    readme = (SCHEMA.parents[2] / "config" / "README.md").read_text()
    assert "<!-- keys: adapt" in readme
    assert key_tables_text(readme) == readme, "config/README.md is stale: run make config-doc"
    # the adapt table is there, whole
    assert key_table("adapt") in readme


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.BLOCK)
def test_every_key_of_a_typed_block_is_documented_once_in_the_schema(cls: type[Block]):
    """Its description is its documentation; config/config.yaml restates none of its defaults
    (a third place that could disagree)."""
    props = _schema_block(cls.BLOCK)["properties"]
    assert all(props[k].get("description") for k in cls.names())
    shipped = yaml.safe_load((SCHEMA.parents[2] / "config" / "config.yaml").read_text())
    restated = [
        k for k, v in (shipped.get(cls.BLOCK) or {}).items() if props[k].get("default") == v
    ]
    assert restated == ["enabled"]  # the one key shown on purpose: turning it on is a choice
