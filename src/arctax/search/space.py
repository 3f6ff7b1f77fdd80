"""The search space, ``sweep.space``: parse and check it, suggest a trial's values, apply them.

An entry is ``<dotted config key>: {type: float|int|categorical, low, high, step, log,
choices}``, or ``null`` (not searched: an overlay can drop an entry of ``config/config.yaml``).
Keys name values that exist under ``trial69.*`` or ``models.<model>.*``; list items by index
(``trial69.optimizer.betas.0``). The study of model M searches the ``trial69.*`` entries and
the ``models.M.*`` ones. Every problem is one :class:`ConfigError` naming
``sweep.space.<key>``, raised when the workflow starts (``check_space``), not in a Slurm job.
This module does not import Optuna: the workflow checks the space at parse time.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from arctax.config import ConfigError, model_config, model_names, validate_config
from arctax.settings import Sweep

TYPES = ("float", "int", "categorical")


def _prefixes(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    return ("trial69.", *(f"models.{m}." for m in model_names(cfg)))


def _resolved(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with every model block resolved (``extends`` applied), so ``models.M.d_model``
    names the value a model of your own inherits; setting it overrides the inherited one."""
    out = dict(cfg)
    out["models"] = {m: model_config(cfg, m) for m in model_names(cfg)}
    return out


@dataclass(frozen=True)
class Param:
    """One searched config value."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain types (for the study's record and the workflow's params)."""
        d = asdict(self)
        d["choices"] = list(self.choices)
        return d

    def values_to_check(self) -> list[Any]:
        """Values whose validity implies the others' (checked against the config schema)."""
        if self.type == "categorical":
            return list(self.choices)
        if self.step is None:
            return [self.low, self.high]
        # low, low + step and the top of the grid: a step that breaks a rule (d_model a
        # multiple of 4) shows at low + step already
        top = self.low + math.floor((self.high - self.low) / self.step + 1e-9) * self.step
        return list(dict.fromkeys([self.low, min(self.low + self.step, top), top]))


def _err(name: str, msg: str) -> ConfigError:
    return ConfigError(f"config key 'sweep.space.{name}': {msg}")


def lookup(cfg: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` (list items by index); ``KeyError`` when there is none."""
    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(key)
    return node


def apply_params(cfg: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` with each dotted key of ``params`` set to its value."""
    out = copy.deepcopy(dict(cfg))
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


def _number(name: str, spec: Mapping[str, Any], field: str, integer: bool) -> float | None:
    v = spec.get(field)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _err(name, f"{field} must be a number, got {v!r}")
    if integer and not isinstance(v, int):
        raise _err(name, f"{field} must be an integer for type int, got {v!r}")
    return v


def parse_param(cfg: Mapping[str, Any], name: str, spec: Any) -> Param:
    """Check one ``sweep.space`` entry against the config; see the module docstring."""
    if not name.startswith(_prefixes(cfg)):
        raise _err(
            name, "only trial69.* and models.<model>.* keys of the config's models can be searched"
        )
    try:
        current = lookup(_resolved(cfg), name)
    except KeyError:
        raise _err(
            name,
            "no such key in the config (name an existing value; list items by index, "
            "e.g. trial69.optimizer.betas.0)",
        ) from None
    if isinstance(current, (Mapping, list)):
        kind = "a list" if isinstance(current, list) else "a block"
        raise _err(name, f"names {kind}, not one value; search its items by their own keys")
    if not isinstance(spec, Mapping):
        raise _err(name, f"expected {{type: float|int|categorical, ...}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise _err(name, f"type must be one of {', '.join(TYPES)}, got {kind!r}")
    if kind == "categorical":
        extra = sorted(
            k for k in ("low", "high", "step", "log") if spec.get(k) not in (None, False)
        )
        if extra:
            raise _err(name, f"a categorical entry takes only choices, not {', '.join(extra)}")
        choices = spec.get("choices")
        if not isinstance(choices, list | tuple) or not choices:
            raise _err(name, "type categorical needs a non-empty list of choices")
        if any(c is not None and not isinstance(c, (bool, int, float, str)) for c in choices):
            raise _err(name, f"choices must be numbers, strings, booleans or null, got {choices}")
        return Param(name, kind, choices=tuple(choices))
    if spec.get("choices") is not None:
        raise _err(name, f"choices belong to type categorical, not {kind}")
    if isinstance(current, bool):
        raise _err(name, f"holds a boolean ({current}): use type: categorical")
    if kind == "float" and isinstance(current, int):
        raise _err(name, f"holds an integer ({current}): use type: int")
    if kind == "int" and isinstance(current, float):
        raise _err(name, f"holds a float ({current}): use type: float")
    integer = kind == "int"
    low = _number(name, spec, "low", integer)
    high = _number(name, spec, "high", integer)
    step = _number(name, spec, "step", integer)
    log = spec.get("log", False)
    if low is None or high is None:
        raise _err(name, f"type {kind} needs low and high")
    if low > high:
        raise _err(name, f"low ({low}) is greater than high ({high})")
    if not isinstance(log, bool):
        raise _err(name, f"log must be true or false, got {log!r}")
    if log and low <= 0:
        raise _err(name, f"log: true needs low > 0, got low = {low}")
    if step is not None:
        if log:
            raise _err(name, "log and step cannot be combined")
        if step <= 0:
            raise _err(name, f"step must be > 0, got {step}")
        n = (high - low) / step
        if abs(n - round(n)) > 1e-9:
            raise _err(name, f"high - low ({high - low:g}) must be a multiple of step ({step})")
    return Param(name, kind, low, high, step, log)


def parse_space(cfg: Mapping[str, Any], model: str | None = None) -> dict[str, Param]:
    """The searched entries (of ``model``'s study when given, else all), in config order."""
    entries = Sweep.of(cfg).space
    out = {}
    for name, spec in entries.items():
        if spec is None:
            continue
        p = parse_param(cfg, name, spec)
        if model is None or name.startswith(("trial69.", f"models.{model}.")):
            out[name] = p
    return out


def check_space(cfg: Mapping[str, Any]) -> None:
    """Check ``sweep.space`` whole: every entry, every value it can take against the config
    schema (a dropout of 1.0, a d_model that is not a multiple of 4), and that each model in
    ``sweep.models`` has something to search. Raises one :class:`ConfigError` naming the key."""
    space = parse_space(cfg)
    values = {name: p.values_to_check() for name, p in space.items()}
    # Entries are independent, so round r sets every entry to its r-th value at once: a few
    # schema validations (each ~40 ms, and every Snakemake start runs this), not one per value.
    for r in range(max(map(len, values.values()), default=0)):
        round_r = {name: vs[min(r, len(vs) - 1)] for name, vs in values.items()}
        try:
            validate_config(apply_params(cfg, round_r))
            continue
        except ConfigError:
            pass
        for name, value in round_r.items():  # which one: check them one by one
            try:
                validate_config(apply_params(cfg, {name: value}))
            except ConfigError as e:
                raise _err(name, f"the value {value!r} is not allowed: {e}") from None
    for model in Sweep.of(cfg).models:
        if not parse_space(cfg, model):
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


def largest_point(cfg: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The config of ``model``'s study at its largest point, for memory: every searched
    number at the top of its range (of its step grid), every categorical at its largest
    number (batch size, widths, depths and dropout's masks grow memory; the others are
    irrelevant to it), non-numeric choices as configured."""
    top: dict[str, Any] = {}
    for name, p in parse_space(cfg, model).items():
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
    return apply_params(cfg, top)
