"""The one check of a study's settings, across keys, before anything runs.

The workflow runs it when it starts (``workflow/rules/common.smk``: ``snakemake -n`` refuses a bad
config with one line) and the command line by hand (``arctax check``): the same function, so a
config that passes one passes the other. It returns the :class:`Plan` both go on with: the test
sets, the adapted one, whether re-arc is generated and how the reference is given. The schema's
own checks (types, ranges, unknown keys) come first, in :func:`arctax.config.load_config` or
:func:`workflow_settings`; nothing here reads a file but a model class of your own, imported to
check its block (torch only then).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arctax.config import ConfigError, coerce_to_schema, fill_defaults, validate_config
from arctax.data.testsets import check_adapt_set, generating, named_sets
from arctax.evaluation.reference import REFERENCE, reference_way
from arctax.search.space import check_space
from arctax.settings import Settings


@dataclass(frozen=True)
class Plan:
    """What a study runs, decided from its settings: ``test_sets`` (name -> source, config
    order), ``adapt_test_set`` (the adapted one), ``generate_rearc`` (``data.source: rearc``),
    ``reference_way`` (how the reference is given) and ``adapted`` (the ``(label, tag)`` of
    every adapted run)."""

    test_sets: Mapping[str, str]
    adapt_test_set: str
    generate_rearc: bool
    reference_way: str
    adapted: tuple[tuple[str, str], ...]


def plan(s: Settings) -> Plan:
    """The plan of ``s``, with the checks it needs (the test sets well formed, the adapted one
    among them and not the val split); :func:`check` adds the others."""
    sets = named_sets(s.data)
    adapt_set = s.adapt.test_set or next(iter(sets))
    if adapt_set not in sets:
        raise ConfigError(
            f"config key 'adapt.test_set': {adapt_set!r} is not a test set "
            f"(data.test_sets has {', '.join(sets)})"
        )
    check_adapt_set(s.data, s.adapt, adapt_set)
    way = reference_way(s.champion)
    adapted: list[tuple[str, str]] = []
    if s.adapt.enabled:
        adapted = [(m, f"seed{x}") for m in s.adapt.models if m in s.models for x in s.seeds]
        if s.adapt.reference and way in ("checkpoint", "bootstrap"):
            adapted.append((REFERENCE, "reference"))
    return Plan(sets, adapt_set, generating(s.data), way, tuple(adapted))


def check_model_lists(s: Settings) -> None:
    """``adapt.models`` and ``sweep.models`` name models of the study; a model name is not
    the reference's label."""
    names = list(s.models)
    if REFERENCE in names:
        raise ConfigError(
            f"config key 'models.{REFERENCE}': the reference's label in every table; "
            "give your model another name"
        )
    for key, listed in (("adapt", s.adapt.models), ("sweep", s.sweep.models)):
        for name in listed:
            if name not in names:
                raise ConfigError(
                    f"config key '{key}.models': '{name}' is not one of the config's models "
                    f"({', '.join(names)}); add a models.{name} block or drop it here"
                )


def check_own_models(s: Settings) -> None:
    """A model of your own (``models.<name>.class``) imports, its block fits its constructor,
    and it has the protocol (torch is imported only when there is one)."""
    own = [m for m in s.models.values() if m.cls]
    if not own:
        return
    from arctax.models import ModelError, resolve_model

    for m in own:
        try:
            resolve_model(m.name, m.config(), m.cls)
        except ModelError as e:
            raise ConfigError(str(e)) from None


def check(s: Settings) -> Plan:
    """Every check across keys, refused now rather than in a Slurm job: ``trainer.devices``
    splits the global batch ``trial69.batch_size``; the trackers of ``trainer.loggers`` are
    installed; ``adapt.models`` and ``sweep.models`` name models of the study; ``sweep.space``
    names real keys with valid ranges; the test sets and the re-arc generation are well formed;
    the reference is given one way; a model of your own builds. Returns the study's plan; a
    problem is one :class:`ConfigError` (or :class:`arctax.evaluation.reference.ReferenceError`)
    naming the key."""
    s.trainer.check_batch_split(s.trial69.batch_size)
    check_model_lists(s)
    s.trainer.check_trackers()
    check_space(s)
    p = plan(s)
    check_own_models(s)
    return p


def reads_reference(argv: list[str], out: str) -> bool:
    """Whether a Snakemake command line (``argv``) plans jobs that read the reference: any but
    a search alone (``snakemake sweep``, or targets under ``<out>/sweep/``). Snakemake gives
    the targets to the workflow only after parsing; the command line is where they are read."""
    sweep_only = "all" not in argv and any(
        a == "sweep" or a.startswith(f"{out}/sweep/") for a in argv
    )
    return not sweep_only


def _update(d: dict[str, Any], over: Mapping[str, Any]) -> None:
    """``d`` updated by ``over`` in place, recursing into nested mappings."""
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(d.get(k), dict):
            _update(d[k], v)
        else:
            d[k] = v


def workflow_settings(config: dict[str, Any], command_line: Mapping[str, Any]) -> Settings:
    """The settings of Snakemake's ``config`` (filled in place, as the jobs read it):
    ``--config key=[1,2]`` values (``command_line``) arrive as strings and are read as the
    schema's types (values from config files never are: a "32" there is an error naming the
    key), then the schema validates and fills its defaults."""
    _update(config, coerce_to_schema(dict(command_line)))
    validate_config(config)
    fill_defaults(config)
    return Settings.of(config)
