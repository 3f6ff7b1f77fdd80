"""Typed settings: one frozen dataclass per config block, built once at the boundary.

The CLI and the workflow scripts load and validate the YAML (:func:`arctax.config.load_config`,
which fills every default from the schema), then build the block a library function needs:
``Adapt.of(cfg)``. The schema (``workflow/schemas/config.schema.yaml``) stays the ONE source of
defaults: a dataclass here declares its keys and types but no default, so a partial config (a
notebook's dict, a benchmark's overrides) is refused naming the missing keys instead of quietly
getting other defaults. ``tests/test_settings.py`` holds each block's fields equal to the
schema's keys.

A block also owns which of its keys a job's results depend on (``role`` in each field's
metadata), so adding a key is a two-place change: the field here and its schema entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from arctax.config import ConfigError

T = TypeVar("T", bound="Block")

# roles of a key: what depends on it
METHOD = "method"  # how each result is made: part of its fingerprint (a change re-runs it)
SHARDS = "shards"  # which items are made and how they are cut into jobs (names the job files)
PLAN = "plan"  # which runs exist at all (the workflow's targets), never a result's content
OBSERVE = "observe"  # how a job is watched, logged, stopped or labelled, never what it computes


def key(role: str = METHOD, block: type[Block] | None = None) -> Any:
    """A field of a settings block, with the role of its key (no default: the schema has it);
    ``block``: the field is a sub-block (a nested mapping of its own keys, e.g. ``data.rearc``)."""
    return field(metadata={"role": role, "block": block})


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
            sub, value = f.metadata.get("block"), raw[f.name]
            if sub is not None and value is not None:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"config key '{sub.BLOCK}' must be a mapping, got {value!r}")
                values[f.name] = sub.from_block(value)
            else:
                values[f.name] = _frozen(value)
        return cls(**values)

    @classmethod
    def names(cls, *roles: str) -> tuple[str, ...]:
        """The block's keys (of ``roles``, or all), in declaration order."""
        return tuple(
            f.name
            for f in dataclasses.fields(cls)
            if not roles or f.metadata.get("role", METHOD) in roles
        )

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes`` (validated only as far as the dataclass knows)."""
        return dataclasses.replace(self, **{k: _frozen(v) for k, v in changes.items()})

    def as_dict(self, *roles: str) -> dict[str, Any]:
        """The keys (of ``roles``, or all) as a plain JSON-ready dict, in declaration order."""
        return {k: _plain(getattr(self, k)) for k in self.names(*roles)}


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
    tracking: Mapping[str, Any] = key(OBSERVE)

    def method(self) -> dict[str, Any]:
        """What a training's results depend on (the workflow's train params)."""
        return self.as_dict(METHOD)


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
    space: Mapping[str, Any] = key()
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
    """``eval``: decoding, attempts, voting views and the statistics of every evaluation."""

    BLOCK: ClassVar[str] = "eval"

    batch_size: int = key()
    attempts: int = key()
    max_new_tokens: int = key()
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

    Roles: ``method`` keys make the examples; ``observe`` keys say where the generators are,
    how the work is cut into jobs and when a call is given up (not what it makes)."""

    BLOCK: ClassVar[str] = "data.rearc"

    repo: str | None = key(OBSERVE)
    n_examples: int | None = key()
    seed: int = key()
    diff_lb: float = key()
    diff_ub: float = key()
    tasks: tuple[str, ...] | None = key()
    tasks_per_job: int = key(OBSERVE)
    attempts_per_example: int = key()
    call_timeout_s: float = key(OBSERVE)


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
    test sets (adding or changing one trains nothing again)."""

    BLOCK: ClassVar[str] = "data"

    source: str = key()
    examples_per_task: int | None = key()
    rearc: Rearc = key(block=Rearc)
    test_sets: Mapping[str, str | None] | None = key(PLAN)
    test_source: str | None = key(PLAN)
    held_out_fraction: float | None = key()
    test_fraction: float = key(PLAN)
    manifest: str | None = key()
    on_invalid: str = key()
    val_fraction: float = key()
    split_seed: int = key()
    context_pairs: int = key()
    example_seed: int = key()
    max_grid: int = key()
    max_tasks: int | None = key()
    max_cells: int | None = key()
    augment: Augment = key(block=Augment)


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
