"""Typed settings: the whole config as one frozen object, built once at the boundary.

:func:`load_settings` (the CLI, notebooks, tests) and the workflow (``common.smk``, once; each
workflow script from ``snakemake.config``) build :class:`Settings` from the validated YAML
(:func:`arctax.config.load_config` fills every default from the schema): one frozen dataclass per
config block (``s.trainer``, ``s.data.rearc``, ``s.models["champion"]``). Entry points hand
blocks down; library functions take the blocks they use, never the dict. The schema
(``workflow/schemas/config.schema.yaml``) stays the ONE source of defaults: a dataclass here
declares its keys and types but no default, so a partial config (a notebook's dict, a
benchmark's overrides) is refused naming the missing keys instead of quietly getting other
defaults. ``tests/test_settings.py`` holds each block's fields equal to the schema's keys.

A block also owns which of its keys each job's results depend on (the ``roles`` of each field),
so adding a key is a two-place change: the field here, with its roles, and its schema entry.
Every params function of the workflow and every fingerprint reads its keys by role.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from arctax.config import ConfigError, deep_merge, load_config

T = TypeVar("T", bound="Block")

# roles of a key: what depends on it (a key may have several)
METHOD = "method"  # how each result is made: part of its fingerprint (a change re-runs it)
SHARDS = "shards"  # which items are made and how they are cut into jobs (names the job files)
PLAN = "plan"  # which runs exist at all (the workflow's targets), never a result's content
OBSERVE = "observe"  # how a job is watched, logged, stopped or labelled, never what it computes
TEST_SETS = "test_sets"  # a data key every test set's preparation depends on (params, hash)
ADAPTED = "adapted"  # an eval key an adapted task's answers depend on (its saved record's
#                      fingerprint and the shard's params)
ADAPT_JOBS = "adapt_jobs"  # an eval key the adaptation's shards run with: their params only (a
#                            saved task's record is reused across a change)

MODEL_NAMES = ("champion", "encoder_decoder", "decoder_only")  # the built-in models
# Keys of a `models.<name>` block that are not constructor arguments.
RESERVED_MODEL_KEYS = ("class", "extends", "accept_changed_code")


def key(*roles: str, block: type[Block] | None = None, entries: Any = None) -> Any:
    """A field of a settings block, with the roles of its key (default ``method``; no default
    value: the schema has it); ``block``: the field is a sub-block (a nested mapping of its own
    keys, e.g. ``data.rearc``); ``entries``: a mapping of names to typed entries, each made by
    ``entries.of_entry(name, value)`` (``sweep.space``; a ``null`` entry stays None)."""
    return field(metadata={"roles": roles or (METHOD,), "block": block, "entries": entries})


def flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted_key, leaf_value)`` pairs of a nested mapping."""
    for name, value in d.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def _frozen(value: Any) -> Any:
    """Lists become tuples (hashable, immutable); mappings stay plain dicts of frozen values."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _frozen(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    """The JSON-ready form of a field value (tuples back to lists, sub-blocks to dicts)."""
    if isinstance(value, Block):
        return value.as_dict()
    if hasattr(value, "plain"):  # a typed entry: the value as the config gave it
        return value.plain()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Block:
    """Base of the settings blocks; ``BLOCK`` is the config key the block is read from."""

    BLOCK: ClassVar[str] = ""

    @classmethod
    def of(cls: type[T], cfg: Mapping[str, Any]) -> T:
        """The block of a validated config (``load_config`` or Snakemake's ``config``).

        Every key must be present: the schema fills them. A missing one is a config built by
        hand; the error names the keys and the fix rather than falling back to a default.
        """
        raw = cfg.get(cls.BLOCK) if isinstance(cfg, Mapping) else None
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"config block '{cls.BLOCK}' is missing: build settings from a validated config "
                "(arctax.config.load_config, or Snakemake's config), which fills the schema's "
                "defaults"
            )
        return cls.from_block(raw)

    @classmethod
    def from_block(cls: type[T], raw: Mapping[str, Any]) -> T:
        """The block from its own mapping (``cfg[BLOCK]``); every key required, none unknown."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in raw]
        unknown = sorted(set(raw) - set(names))
        if missing or unknown:
            parts = []
            if missing:
                parts.append("lacks " + ", ".join(f"'{cls.BLOCK}.{n}'" for n in missing))
            if unknown:
                parts.append("has unknown " + ", ".join(f"'{cls.BLOCK}.{n}'" for n in unknown))
            raise ConfigError(
                f"config block '{cls.BLOCK}' {' and '.join(parts)}: build settings from a "
                "validated config (arctax.config.load_config fills every default from "
                "workflow/schemas/config.schema.yaml), not from a partial dict"
            )
        values = {}
        for f in dataclasses.fields(cls):
            sub, entries, value = f.metadata.get("block"), f.metadata.get("entries"), raw[f.name]
            if (
                (sub or entries) is not None
                and value is not None
                and not isinstance(value, Mapping)
            ):
                where = sub.BLOCK if sub else f"{cls.BLOCK}.{f.name}"
                raise ConfigError(f"config key '{where}' must be a mapping, got {value!r}")
            if sub is not None and value is not None:
                values[f.name] = sub.from_block(value)
            elif entries is not None and value is not None:
                values[f.name] = {
                    k: None if v is None else entries.of_entry(k, v) for k, v in value.items()
                }
            else:
                values[f.name] = _frozen(value)
        return cls(**values)

    @classmethod
    def names(cls, *roles: str, without: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The block's keys having one of ``roles`` (or all) and none of ``without``, in
        declaration order."""
        out = []
        for f in dataclasses.fields(cls):
            mine = f.metadata.get("roles", (METHOD,))
            if (not roles or set(mine) & set(roles)) and not set(mine) & set(without):
                out.append(f.name)
        return tuple(out)

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes`` (validated only as far as the dataclass knows)."""
        return dataclasses.replace(self, **{k: _frozen(v) for k, v in changes.items()})

    def as_dict(self, *roles: str, without: tuple[str, ...] = ()) -> dict[str, Any]:
        """The keys (of ``roles``, or all; none of ``without``) as a plain JSON-ready dict, in
        declaration order."""
        return {k: _plain(getattr(self, k)) for k in self.names(*roles, without=without)}


@dataclass(frozen=True)
class Tracking(Block):
    """``trainer.tracking``: where the trackers of ``trainer.loggers`` write (watching only)."""

    BLOCK: ClassVar[str] = "trainer.tracking"

    project: str = key(OBSERVE)
    wandb_mode: str = key(OBSERVE)
    wandb_entity: str | None = key(OBSERVE)
    mlflow_uri: str | None = key(OBSERVE)


TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


@dataclass(frozen=True)
class Trainer(Block):
    """``trainer``: where and how training runs (not the recipe: that is ``trial69``).

    Roles: ``method`` keys can change what a training computes (its processes, precision,
    epochs, data loading): a change trains again. ``observe`` keys only watch or stop it
    (logging, trackers, the Slurm stop margin): a change re-runs nothing.
    """

    BLOCK: ClassVar[str] = "trainer"

    accelerator: str = key()
    devices: int = key()
    cpu_precision: str = key()
    num_workers: int = key()
    compile: bool | str = key()
    max_epochs: int | None = key()
    limit_train_batches: float | None = key()
    limit_val_batches: float | None = key()
    log_every_n_steps: int = key(OBSERVE)
    max_skipped_steps: float = key(OBSERVE)
    smaller_gpu: str = key(OBSERVE)
    save_margin_s: float = key(OBSERVE)
    loggers: tuple[str, ...] = key(OBSERVE)
    tracking: Tracking = key(OBSERVE, block=Tracking)

    def method(self) -> dict[str, Any]:
        """What a training's results depend on (the workflow's train params)."""
        return self.as_dict(METHOD)

    def check_batch_split(self, batch: int) -> None:
        """``trial69.batch_size`` (``batch``) is the GLOBAL batch: ``devices`` processes must
        split it evenly (checked when the workflow starts, and again where training starts)."""
        if batch % self.devices:
            ok = [d for d in range(1, batch + 1) if batch % d == 0]
            raise ConfigError(
                f"trainer.devices: {self.devices} cannot split trial69.batch_size: {batch} (the "
                f"global batch, split evenly over the processes); use trainer.devices in {ok}"
            )

    def check_trackers(self) -> None:
        """Every tracker of ``loggers`` is installed: refused at config time, naming the extra
        to install, not hours later in a training job (``csv`` needs nothing)."""
        for name in self.loggers:
            module = TRACKER_MODULES.get(name)
            if module is not None and importlib.util.find_spec(module) is None:
                raise ConfigError(
                    f"config key 'trainer.loggers': {name} is not installed here; install its "
                    f"extra: pip install 'arctax[{name}]' (or drop {name} from the list)"
                )


SEARCH_TYPES = ("float", "int", "categorical")


def _space_error(name: str, msg: str) -> ConfigError:
    return ConfigError(f"config key 'sweep.space.{name}': {msg}")


def _number(name: str, spec: Mapping[str, Any], field: str, integer: bool) -> float | None:
    v = spec.get(field)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _space_error(name, f"{field} must be a number, got {v!r}")
    if integer and not isinstance(v, int):
        raise _space_error(name, f"{field} must be an integer for type int, got {v!r}")
    return v


@dataclass(frozen=True)
class Param:
    """One ``sweep.space`` entry: a searched config value and its range (``type``, ``low``,
    ``high``, ``step``, ``log``, ``choices``; the schema's keys, absent ones None / False).
    Checked here for itself; against the config's values by :func:`arctax.search.space.check_space`.
    """

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    given: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of_entry(cls, name: str, spec: Any) -> Param:
        """The entry ``name: spec`` of ``sweep.space``; one :class:`ConfigError` naming it."""
        if not isinstance(spec, Mapping):
            raise _space_error(name, f"expected {{type: float|int|categorical, ...}}, got {spec!r}")
        kind = spec.get("type")
        if kind not in SEARCH_TYPES:
            raise _space_error(name, f"type must be one of {', '.join(SEARCH_TYPES)}, got {kind!r}")
        given = _frozen(spec)
        if kind == "categorical":
            extra = sorted(
                k for k in ("low", "high", "step", "log") if spec.get(k) not in (None, False)
            )
            if extra:
                raise _space_error(
                    name, f"a categorical entry takes only choices, not {', '.join(extra)}"
                )
            choices = spec.get("choices")
            if not isinstance(choices, list | tuple) or not choices:
                raise _space_error(name, "type categorical needs a non-empty list of choices")
            if any(c is not None and not isinstance(c, (bool, int, float, str)) for c in choices):
                raise _space_error(
                    name, f"choices must be numbers, strings, booleans or null, got {choices}"
                )
            return cls(name, kind, choices=tuple(choices), given=given)
        if spec.get("choices") is not None:
            raise _space_error(name, f"choices belong to type categorical, not {kind}")
        integer = kind == "int"
        low = _number(name, spec, "low", integer)
        high = _number(name, spec, "high", integer)
        step = _number(name, spec, "step", integer)
        log = spec.get("log", False)  # absent: the schema's "no log scale"
        if low is None or high is None:
            raise _space_error(name, f"type {kind} needs low and high")
        if low > high:
            raise _space_error(name, f"low ({low}) is greater than high ({high})")
        if not isinstance(log, bool):
            raise _space_error(name, f"log must be true or false, got {log!r}")
        if log and low <= 0:
            raise _space_error(name, f"log: true needs low > 0, got low = {low}")
        if step is not None:
            if log:
                raise _space_error(name, "log and step cannot be combined")
            if step <= 0:
                raise _space_error(name, f"step must be > 0, got {step}")
            n = (high - low) / step
            if abs(n - round(n)) > 1e-9:
                raise _space_error(
                    name, f"high - low ({high - low:g}) must be a multiple of step ({step})"
                )
        return cls(name, kind, low, high, step, log, given=given)

    def plain(self) -> Any:
        """The entry as the config gave it (what the workflow's params hold)."""
        return _plain(self.given)

    def as_dict(self) -> dict[str, Any]:
        """Every field, plain (a study's record of its space)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "given"}
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


@dataclass(frozen=True)
class Sweep(Block):
    """``sweep``: the hyper-parameter search, one Optuna study per model (``snakemake sweep``).

    Roles: ``method`` keys make a study's trials (the workers' params: a change re-runs the
    workers, which add only the missing trials); ``plan`` keys choose the studies and how many
    worker jobs share each; ``origin`` (written by a study's ``best.yaml``) only labels the
    trainings that use its values.
    """

    BLOCK: ClassVar[str] = "sweep"

    models: tuple[str, ...] = key(PLAN)
    n_trials: int = key()
    workers: int = key(PLAN)
    seed: int = key()
    sampler: str = key()
    n_startup_trials: int = key()
    pruner: str = key()
    max_epochs: int = key()
    limit_train_batches: float | None = key()
    limit_val_batches: float | None = key()
    max_retries: int = key()
    space: Mapping[str, Param | None] = key(entries=Param)  # None: an entry an overlay dropped
    origin: Mapping[str, Any] | None = key(OBSERVE)

    def method(self) -> dict[str, Any]:
        """What a study's trials depend on (the sweep workers' params)."""
        return self.as_dict(METHOD)

    def trial_training(self) -> dict[str, Any]:
        """The short training each trial runs (``trainer`` keys it replaces)."""
        keys = ("max_epochs", "limit_train_batches", "limit_val_batches")
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class Eval(Block):
    """``eval``: decoding, attempts, voting views and the statistics of every evaluation.

    Roles: every key makes an evaluation (``method``); the adaptation decodes with
    ``max_new_tokens`` (``adapted``: a task's saved answers depend on it) and ``batch_size``
    (``adapt_jobs``: its shards' params only)."""

    BLOCK: ClassVar[str] = "eval"

    batch_size: int = key(METHOD, ADAPT_JOBS)
    attempts: int = key()
    max_new_tokens: int = key(METHOD, ADAPTED)
    bootstrap_samples: int = key()
    ci: float = key()
    seed: int = key()
    gallery_tasks: int = key()
    views: int = key()


@dataclass(frozen=True)
class Adapt(Block):
    """``adapt``: voting and per-task adaptation (test-time training); docs in config/README.md.

    Roles: ``method`` keys make a task's answers (its fingerprint: a change re-adapts it);
    ``shards`` keys name the shard files; ``plan`` keys choose which runs are adapted.
    """

    BLOCK: ClassVar[str] = "adapt"

    enabled: bool = key(PLAN)
    test_set: str | None = key(SHARDS)
    models: tuple[str, ...] = key(PLAN)
    reference: bool = key(PLAN)
    rank: int = key()
    alpha: float = key()
    targets: tuple[str, ...] = key()
    steps: int = key()
    lr: float = key()
    batch_size: int = key()
    augment_views: int = key()
    voting_views: int = key()
    attempts: int = key()
    weight_decay: float = key()
    select: str = key()
    select_every: int = key()
    select_folds: int = key()
    select_patience: int = key()
    select_metric: str = key()
    select_min_delta: float = key()
    select_tiebreak: str = key()
    select_unsolved: str = key()
    colour_views: bool = key()
    pool: str = key()
    scoring: str = key()
    tasks_per_job: int = key(SHARDS)
    tasks_per_batch: int = key()
    max_tasks: int | None = key(SHARDS)
    save_adapters: bool = key()
    seed: int = key()

    @property
    def selecting(self) -> bool:
        """Whether the steps per task are chosen on held-out demonstrations."""
        return self.select == "heldout" and self.steps > 0

    def method(self) -> dict[str, Any]:
        """What a task's answers depend on (a retried job reuses a record only on a match)."""
        return self.as_dict(METHOD)

    def shard_params(self) -> dict[str, Any]:
        """What a shard job's output depends on: the method and how tasks are cut into jobs
        (not which runs are adapted: adding a model to ``models`` adapts only it)."""
        return self.as_dict(METHOD, SHARDS)


@dataclass(frozen=True)
class Optimizer(Block):
    """``trial69.optimizer``: Adam's settings."""

    BLOCK: ClassVar[str] = "trial69.optimizer"

    name: str = key()
    lr: float = key()
    betas: tuple[float, float] = key()
    weight_decay: float = key()


@dataclass(frozen=True)
class Scheduler(Block):
    """``trial69.scheduler``: CosineAnnealingWarmRestarts, stepped per ``interval``."""

    BLOCK: ClassVar[str] = "trial69.scheduler"

    name: str = key()
    T_0: int = key()
    T_mult: int = key()
    eta_min: float = key()
    interval: str = key()


@dataclass(frozen=True)
class EarlyStopping(Block):
    """``trial69.early_stopping``: Lightning's EarlyStopping."""

    BLOCK: ClassVar[str] = "trial69.early_stopping"

    monitor: str = key()
    patience: int = key()
    mode: str = key()


@dataclass(frozen=True)
class Trial69(Block):
    """``trial69``: the champion's training recipe. Its values live in ``config/config.yaml``
    (one place, asserted by tests); the schema requires every key and gives no default."""

    BLOCK: ClassVar[str] = "trial69"

    optimizer: Optimizer = key(block=Optimizer)
    scheduler: Scheduler = key(block=Scheduler)
    batch_size: int = key()
    precision: str = key()
    gradient_clip_val: float = key()
    early_stopping: EarlyStopping = key(block=EarlyStopping)
    seed: int = key()
    deterministic: bool = key()
    max_epochs: int = key()


@dataclass(frozen=True)
class Rearc(Block):
    """``data.rearc``: generating re-arc in the workflow (``data.source: rearc``).

    Roles: ``method`` keys make the examples (the training data depend on them); ``shards``
    keys choose the tasks and how they are cut into jobs (``tasks`` is both: it names a shard's
    tasks, and which tasks are made changes the training data); ``observe`` keys say where the
    generators are and when a call is given up, not what it makes. A generation's settings are
    :meth:`Data.rearc_generation` (``n_examples`` resolved): :meth:`examples` is what a task's
    examples depend on."""

    BLOCK: ClassVar[str] = "data.rearc"

    repo: str | None = key(OBSERVE)
    n_examples: int | None = key()
    seed: int = key()
    diff_lb: float = key()
    diff_ub: float = key()
    tasks: tuple[str, ...] | None = key(METHOD, SHARDS)
    tasks_per_job: int = key(SHARDS)
    attempts_per_example: int = key()
    call_timeout_s: float = key(OBSERVE)

    def examples(self) -> dict[str, Any]:
        """What one task's examples depend on, in declaration order (a shard's params, its
        tasks' fingerprint): the method keys but which tasks are made."""
        return self.as_dict(METHOD, without=(SHARDS,))

    @property
    def max_attempts(self) -> int:
        """Generator calls a task may use before it stops short of ``n_examples``."""
        return self.n_examples * self.attempts_per_example


@dataclass(frozen=True)
class Augment(Block):
    """``data.augment``: augmented copies of the training examples."""

    BLOCK: ClassVar[str] = "data.augment"

    copies: int = key()
    dihedral: bool = key()
    colours: bool = key()


@dataclass(frozen=True)
class Data(Block):
    """``data``: the training source, its split and examples, and the test sets.

    Roles: ``method`` keys make the training data (its fingerprint); ``plan`` keys choose the
    test sets (adding or changing one trains nothing again); ``test_sets`` keys make every test
    set (its preparation's params and fingerprint: :mod:`arctax.data.testsets`)."""

    BLOCK: ClassVar[str] = "data"

    source: str = key()
    examples_per_task: int | None = key()
    rearc: Rearc = key(block=Rearc)
    test_sets: Mapping[str, str | None] | None = key(PLAN)
    test_source: str | None = key(PLAN)
    held_out_fraction: float | None = key()
    test_fraction: float = key(PLAN)
    manifest: str | None = key()
    on_invalid: str = key(METHOD, TEST_SETS)
    val_fraction: float = key()
    split_seed: int = key()
    context_pairs: int = key(METHOD, TEST_SETS)
    example_seed: int = key(METHOD, TEST_SETS)
    max_grid: int = key(METHOD, TEST_SETS)
    max_tasks: int | None = key(METHOD, TEST_SETS)
    max_cells: int | None = key(METHOD, TEST_SETS)
    augment: Augment = key(block=Augment)

    def rearc_generation(self) -> Rearc:
        """``data.rearc`` as a generation runs it: ``n_examples`` from ``examples_per_task``
        unless given, the numbers as their types (a ``0`` in YAML is the float ``0.0``)."""
        r = self.rearc
        n = r.n_examples or self.examples_per_task
        if not n:
            raise ConfigError(
                "re-arc generation needs a count per task: set data.examples_per_task "
                "(Trial 69: 150) or data.rearc.n_examples"
            )
        if not 0 <= r.diff_lb <= r.diff_ub <= 1:
            raise ConfigError(
                f"data.rearc.diff_lb {r.diff_lb} / diff_ub {r.diff_ub}: "
                "need 0 <= diff_lb <= diff_ub <= 1"
            )
        return r.replace(
            n_examples=int(n), seed=int(r.seed), diff_lb=float(r.diff_lb),
            diff_ub=float(r.diff_ub), attempts_per_example=int(r.attempts_per_example),
            call_timeout_s=float(r.call_timeout_s),
        )  # fmt: skip


@dataclass(frozen=True)
class Taxonomy(Block):
    """``taxonomy``: the task categories every result is broken down by."""

    BLOCK: ClassVar[str] = "taxonomy"

    labels: str | None = key()


@dataclass(frozen=True)
class Champion(Block):
    """``champion``: the reference, given one way (docs/REFERENCE.md)."""

    BLOCK: ClassVar[str] = "champion"

    checkpoint: str = key()
    bootstrap: bool = key()
    bootstrap_seed: int = key()
    predictions: str | None = key()
    adapter: str | None = key()


@dataclass(frozen=True)
class Limits(Block):
    """``limits``: how much a file from elsewhere (a checkpoint's hyper-parameters) may make
    arctax allocate, checked before anything is (docs/REFERENCE.md). A bound refuses or lets
    through; it never changes what a job computes (``observe``)."""

    BLOCK: ClassVar[str] = "limits"

    max_model_elements: int = key(OBSERVE)


@dataclass(frozen=True)
class Model:
    """``models.<name>``: one model of the study, ``extends`` applied. Its constructor arguments
    (``args``) stay the class's own keys (a built-in's schema entry, or the class itself, checks
    them); the reserved keys are typed here: ``cls`` (``models.<name>.class``, None for a
    built-in) and ``accept_changed_code``, both this block's own (never inherited)."""

    name: str
    cls: str | None
    accept_changed_code: bool
    args: Mapping[str, Any]

    @classmethod
    def of(cls, models: Mapping[str, Any], name: str) -> Model:
        """Model ``name`` of the ``models`` block; an unknown name or an ``extends`` cycle is
        one :class:`ConfigError` naming the key."""
        own = _model_block(models, name)
        block = models[name]
        return cls(
            name=name,
            cls=block.get("class"),
            # the schema's default for a model of your own (fill_defaults leaves those alone)
            accept_changed_code=bool(block.get("accept_changed_code", False)),
            args={k: v for k, v in own.items() if k not in RESERVED_MODEL_KEYS},
        )

    def config(self) -> dict[str, Any]:
        """The constructor arguments as a fresh plain dict (what a model class takes)."""
        return copy.deepcopy(dict(self.args))


def _model_block(
    models: Mapping[str, Any], name: str, seen: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``models.<name>`` with ``extends`` applied (the named block first, then this one's keys)."""
    if name not in models or models[name] is None:
        known = ", ".join(n for n, b in models.items() if b is not None)
        where = f"config key 'models.{seen[-1]}.extends': " if seen else ""
        raise ConfigError(f"{where}unknown model '{name}'; the config's models are {known}")
    block = copy.deepcopy(dict(models[name]))
    base = block.pop("extends", None)
    if base is None:
        return block
    if base == name or base in seen:
        raise ConfigError(f"config key 'models.{name}.extends': {base!r} makes a cycle")
    merged = {
        k: v
        for k, v in _model_block(models, base, (*seen, name)).items()
        if k not in ("class", "accept_changed_code")
    }  # sizes and settings, never the base's class or its acceptance of changed code
    return deep_merge(merged, block)


@dataclass(frozen=True)
class Settings:
    """The whole validated config, typed: one block per key, the models by name (config order,
    ``null`` entries dropped). Built once at the boundary (:func:`load_settings`, the workflow);
    entry points hand its blocks down. ``raw`` is the config as given, for the one record that
    keeps it whole (a training's ``provenance.json``) and for a search trial's config (values
    set by dotted key): no library function reads a key from it."""

    run: str
    preset: str | None
    seeds: tuple[int, ...]
    data: Data
    taxonomy: Taxonomy
    trial69: Trial69
    models: Mapping[str, Model]
    trainer: Trainer
    limits: Limits
    champion: Champion
    eval: Eval
    adapt: Adapt
    sweep: Sweep
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    BLOCKS: ClassVar[dict[str, type[Block]]] = {
        "data": Data, "taxonomy": Taxonomy, "trial69": Trial69, "trainer": Trainer,
        "limits": Limits, "champion": Champion, "eval": Eval, "adapt": Adapt, "sweep": Sweep,
    }  # fmt: skip

    @classmethod
    def of(cls, cfg: Mapping[str, Any]) -> Settings:
        """The settings of a validated config (:func:`arctax.config.load_config`'s, or
        Snakemake's ``config``); a missing or unknown key is one :class:`ConfigError`."""
        if isinstance(cfg, Settings):
            return cfg
        for top in ("run", "seeds", "models"):
            if not isinstance(cfg, Mapping) or top not in cfg:
                raise ConfigError(
                    f"config key '{top}' is missing: build settings from a validated config "
                    "(arctax.settings.load_settings, or Snakemake's config), which fills the "
                    "schema's defaults"
                )
        raw = copy.deepcopy(dict(cfg))
        models = raw["models"]
        return cls(
            run=raw["run"],
            preset=raw.get("preset"),  # optional in the schema, without a default
            seeds=tuple(raw["seeds"]),
            models={n: Model.of(models, n) for n, b in models.items() if b is not None},
            raw=raw,
            **{name: block.of(raw) for name, block in cls.BLOCKS.items()},
        )

    def model(self, name: str) -> Model:
        """Model ``name``; an unknown one is a :class:`ConfigError` naming the config's models."""
        if name not in self.models:
            raise ConfigError(
                f"unknown model '{name}'; the config's models are {', '.join(self.models)}"
            )
        return self.models[name]

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """These settings with ``overrides`` merged over the config (as an overlay file is), not
        checked against the schema again (a search trial's values are, when the study starts)."""
        return Settings.of(deep_merge(self.raw, overrides))

    def as_dict(self) -> dict[str, Any]:
        """The config as given, a plain deep copy (what provenance records)."""
        return copy.deepcopy(dict(self.raw))

    def adaptation(self) -> dict[str, Any]:
        """What an adapted task's answers depend on, besides its checkpoint and test data (its
        saved record's fingerprint): the adaptation's method and the eval keys it decodes with."""
        return {"adapt": self.adapt.method(), **self.eval.as_dict(ADAPTED)}

    def adapt_shard(self) -> dict[str, Any]:
        """What an adaptation shard's output depends on (its params): the adapt block's method
        and shard keys, and the eval keys its jobs run with."""
        return {"adapt": self.adapt.shard_params(), "eval": self.eval.as_dict(ADAPTED, ADAPT_JOBS)}


def load_settings(*paths: str | Path, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load ``config/config.yaml`` with ``paths`` and ``overrides`` merged over it, validated
    and filled from the schema (:func:`arctax.config.load_config`), as :class:`Settings`."""
    return Settings.of(load_config(*paths, overrides=overrides))
