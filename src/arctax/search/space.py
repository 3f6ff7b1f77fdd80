"""The search space, ``sweep.space``: parse and check it, suggest a trial's values, apply them.

An entry is ``<dotted config key>: {type: float|int|categorical, low, high, step, log,
choices}``, or ``null`` (not searched: an overlay can drop an entry of ``config/config.yaml``).
Keys name values that exist under ``trial69.*`` or ``models.<model>.*``; list items by index
(``trial69.optimizer.betas.0``). The study of model M searches the ``trial69.*`` entries and
the ``models.M.*`` ones. An entry is typed when the settings are built
(:class:`arctax.settings.Param`, checked for itself); here it is checked against the config.
Every problem is one :class:`ConfigError` naming ``sweep.space.<key>``, raised when the
workflow starts (``check_space``), not in a Slurm job.
This module does not import Optuna: the workflow checks the space at parse time.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from arctax.config import ConfigError, validate_config
from arctax.settings import Param, Settings

__all__ = ["Param", "apply_params", "check_space", "largest_point", "lookup", "parse_space"]


def _err(name: str, msg: str) -> ConfigError:
    return ConfigError(f"config key 'sweep.space.{name}': {msg}")


def _searchable(s: Settings) -> dict[str, Any]:
    """What a ``sweep.space`` key may name: ``trial69`` and every model block resolved
    (``extends`` applied), so ``models.M.d_model`` names the value a model of your own
    inherits; setting it overrides the inherited one."""
    return {"trial69": s.trial69.as_dict(), "models": {m: b.config() for m, b in s.models.items()}}


def lookup(tree: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` of nested mappings and lists (list items by index);
    ``KeyError`` when there is none."""
    node: Any = tree
    for part in key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(key)
    return node


def apply_params(raw: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the config dict ``raw`` with each dotted key of ``params`` set to its value."""
    out = copy.deepcopy(dict(raw))
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value
    return out


def _check_entry(p: Param, searchable: Mapping[str, Any], prefixes: tuple[str, ...]) -> Param:
    """Check one ``sweep.space`` entry (already checked for itself, :class:`Param`) against the
    config: a key of its ``trial69`` or of one of its models, holding one value of its type."""
    name = p.key
    if not name.startswith(prefixes):
        raise _err(
            name, "only trial69.* and models.<model>.* keys of the config's models can be searched"
        )
    try:
        current = lookup(searchable, name)
    except KeyError:
        raise _err(
            name,
            "no such key in the config (name an existing value; list items by index, "
            "e.g. trial69.optimizer.betas.0)",
        ) from None
    if isinstance(current, (Mapping, list)):
        kind = "a list" if isinstance(current, list) else "a block"
        raise _err(name, f"names {kind}, not one value; search its items by their own keys")
    if p.type != "categorical":
        if isinstance(current, bool):
            raise _err(name, f"holds a boolean ({current}): use type: categorical")
        if p.type == "float" and isinstance(current, int):
            raise _err(name, f"holds an integer ({current}): use type: int")
        if p.type == "int" and isinstance(current, float):
            raise _err(name, f"holds a float ({current}): use type: float")
    return p


def parse_space(s: Settings, model: str | None = None) -> dict[str, Param]:
    """The searched entries (of ``model``'s study when given, else all), in config order, each
    checked against the config."""
    searchable = _searchable(s)
    prefixes = ("trial69.", *(f"models.{m}." for m in s.models))
    out = {}
    for name, p in s.sweep.space.items():
        if p is None:
            continue
        _check_entry(p, searchable, prefixes)
        if model is None or name.startswith(("trial69.", f"models.{model}.")):
            out[name] = p
    return out


def check_space(s: Settings) -> None:
    """Check ``sweep.space`` whole: every entry, every value it can take against the config
    schema (a dropout of 1.0, a d_model that is not a multiple of 4), and that each model in
    ``sweep.models`` has something to search. Raises one :class:`ConfigError` naming the key."""
    space = parse_space(s)
    values = {name: p.values_to_check() for name, p in space.items()}
    # Entries are independent, so round r sets every entry to its r-th value at once: a few
    # schema validations (each ~40 ms, and every Snakemake start runs this), not one per value.
    for r in range(max(map(len, values.values()), default=0)):
        round_r = {name: vs[min(r, len(vs) - 1)] for name, vs in values.items()}
        try:
            validate_config(apply_params(s.raw, round_r))
            continue
        except ConfigError:
            pass
        for name, value in round_r.items():  # which one: check them one by one
            try:
                validate_config(apply_params(s.raw, {name: value}))
            except ConfigError as e:
                raise _err(name, f"the value {value!r} is not allowed: {e}") from None
    for model in s.sweep.models:
        if not parse_space(s, model):
            raise ConfigError(
                f"config key 'sweep.space': nothing to search for model '{model}' "
                f"(add trial69.* or models.{model}.* entries, or remove it from sweep.models)"
            )


def suggest(trial: Any, space: Mapping[str, Param]) -> dict[str, Any]:
    """Ask an ``optuna.Trial`` for one value per entry (a retried trial gets its old values)."""
    out = {}
    for name, p in space.items():
        if p.type == "float":
            out[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
        elif p.type == "int":
            out[name] = trial.suggest_int(name, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            out[name] = trial.suggest_categorical(name, list(p.choices))
    return out


def largest_point(s: Settings, model: str) -> Settings:
    """The settings of ``model``'s study at its largest point, for memory: every searched
    number at the top of its range (of its step grid), every categorical at its largest
    number (batch size, widths, depths and dropout's masks grow memory; the others are
    irrelevant to it), non-numeric choices as configured."""
    top: dict[str, Any] = {}
    for name, p in parse_space(s, model).items():
        if p.type == "categorical":
            numbers = [
                c for c in p.choices if isinstance(c, (int, float)) and not isinstance(c, bool)
            ]
            if numbers:
                top[name] = max(numbers)
            continue
        value = p.high
        if p.step is not None:
            value = p.low + math.floor((p.high - p.low) / p.step + 1e-9) * p.step
        top[name] = int(value) if p.type == "int" else float(value)
    return Settings.of(apply_params(s.raw, top))
