"""Reference adapters: run a reference model that arctax cannot load, with its owner's code.

``champion.adapter: "package.module:function"`` (or ``"path/to/file.py:function"``) names a
loader with the signature ::

    def load(checkpoint: str, device: str, config: dict) -> Predictor

called once in the ``evaluate_reference`` job with the file at ``champion.checkpoint``, the
device to use (``"cuda"`` when a GPU is there and ``trainer.accelerator`` is not ``cpu``, else
``"cpu"``) and the whole workflow config. The predictor it returns is called with batches of
at most ``eval.batch_size`` :class:`Query` objects (sorted by input size, the same batches
arctax's own evaluation forms) and returns, for each query in order, one or two attempts:
a grid (a numpy array or a list of rows of colours 0..9) or ``None`` for no answer. The
answers are written as ``submission.json`` and scored by the same scorer as every model.
A predictor never sees a test output. The protocol in full: docs/REFERENCE.md.

:func:`arctax_checkpoint` is a working adapter for an arctax checkpoint (greedy decoding, as
``evaluate`` does): the protocol's proof and a template.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from arctax import plugins
from arctax.evaluation.submission import SubmissionError, as_grid
from arctax.settings import Settings

Grid = np.ndarray
Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Query:
    """One test input of one task, as a reference predictor receives it (no test output)."""

    task_id: str
    index: int  # position of this input in the task's test list (the submission's order)
    input: Grid  # (H, W) colours 0..9
    demonstrations: tuple[Pair, ...]  # every demonstration pair of the task, in task order
    context: tuple[Pair, ...]  # the K pairs arctax's own models are given with this query


class Predictor(Protocol):
    """What an adapter's loader returns."""

    def __call__(self, queries: list[Query]) -> Sequence[Sequence[Any] | Any]: ...


class AdapterError(RuntimeError):
    """An adapter cannot be loaded or broke the protocol; the message names it and the fix."""


def check_spec(spec: str) -> tuple[str, str]:
    """Split ``"module:function"`` / ``"file.py:function"``; raise if it cannot be found.

    Cheap (no import of the module itself, only its parent packages): used when the workflow
    starts, so a typo stops ``snakemake -n``.
    """
    try:
        return plugins.check_spec(spec, "champion.adapter")
    except plugins.PluginError as e:
        raise AdapterError(str(e)) from None


def load_adapter(spec: str) -> Callable[[str, str, dict], Predictor]:
    """Import the loader named by ``spec``."""
    try:
        fn = plugins.load_object(spec, "champion.adapter")
    except plugins.PluginError as e:
        raise AdapterError(str(e)) from None
    if not callable(fn):
        raise AdapterError(f"config key 'champion.adapter' {spec!r}: {fn!r} is not a function")
    return fn


def queries(ds: Any, order: np.ndarray) -> list[tuple[int, Query]]:
    """The test queries of ``ds`` in ``order`` (example indices), without their outputs."""
    out = []
    for i in map(int, order):
        m, ex = ds.meta(i), ds[i]
        demos = tuple(ds.demos(int(ds.ex_task[i])))
        out.append((i, Query(m["task_id"], m["pair"], ex["query_in"], demos, tuple(ex["context"]))))
    return out


def _attempts(value: Any, q: Query, spec: str) -> list[Grid | None]:
    """Validate what a predictor returned for one query: 1 or 2 attempts."""
    where = f"champion.adapter {spec}: task {q.task_id} test input {q.index}"
    if value is None or isinstance(value, np.ndarray) or (
        isinstance(value, list) and value and isinstance(value[0], list) and value[0]
        and not isinstance(value[0][0], (list, np.ndarray))
    ):  # fmt: skip
        value = [value]  # a single grid (or None) instead of a list of attempts
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 2:
        raise AdapterError(f"{where}: return a list of 1 or 2 attempts (grids or None)")
    try:
        return [
            None if g is None else as_grid(np.asarray(g).tolist(), f"{where} attempt {a + 1}")
            for a, g in enumerate(value)
        ]
    except SubmissionError as e:
        raise AdapterError(str(e)) from e


def predict_with_adapter(
    s: Settings, spec: str, checkpoint: str | Path, ds: Any, order: np.ndarray
) -> tuple[dict[int, list[Grid | None]], float, str]:
    """Run the adapter over the test queries: ``(answers by example index, seconds, device)``.
    The adapter gets the whole config as a plain dict (its documented protocol)."""
    import torch

    accel = s.trainer.accelerator
    device = "cuda" if torch.cuda.is_available() and accel != "cpu" else "cpu"
    predictor = load_adapter(spec)(str(checkpoint), device, s.as_dict())
    batch = s.eval.batch_size
    todo = queries(ds, order)
    answers: dict[int, list[Grid | None]] = {}
    seconds = 0.0
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        t0 = time.perf_counter()
        got = predictor([q for _, q in chunk])
        seconds += time.perf_counter() - t0
        if not isinstance(got, (list, tuple)) or len(got) != len(chunk):
            n = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
            raise AdapterError(
                f"champion.adapter {spec}: the predictor returned {n} answers for {len(chunk)} "
                "queries; return one list of attempts per query, in order"
            )
        for (i, q), value in zip(chunk, got, strict=True):
            answers[i] = _attempts(value, q, spec)
    return answers, seconds, device


def arctax_checkpoint(checkpoint: str, device: str, config: dict) -> Predictor:
    """Example adapter: an arctax checkpoint answered by greedy decoding (as ``evaluate``).

    With ``champion.adapter: "arctax.evaluation.adapters:arctax_checkpoint"`` and the same
    checkpoint, the reference's answers equal those of ``champion.checkpoint`` (tested).
    """
    import torch

    from arctax.evaluation.checkpoints import load_model
    from arctax.evaluation.decode import answer_inputs

    s = Settings.of(config)  # the adapter protocol hands the config over as a dict
    model, info = load_model(checkpoint, s.models, s.limits)
    model.to(device)
    max_new = s.eval.max_new_tokens

    def predict(batch: list[Query]) -> list[list[Grid | None]]:
        with torch.inference_mode():
            grids = answer_inputs(model, info["k"], [(q.input, q.context) for q in batch], max_new)
        return [[g] for g in grids]

    return predict
