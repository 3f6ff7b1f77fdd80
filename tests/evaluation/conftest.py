"""Shared builders for the evaluation tests: tiny model configs, checkpoints, synthetic tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from arctax.models import build_model

REPO = Path(__file__).resolve().parents[2]
SHARED_ORIGINAL = REPO / ".." / "shared" / "data" / "original"

TINY_MODELS = {
    "champion": {
        "d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 32,
        "encoder_dropout": 0.0, "decoder_dropout": 0.0, "context": {"d_model": 8, "n_heads": 2},
    },
    "encoder_decoder": {
        "d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 32,
        "dropout": 0.0,
    },
    "decoder_only": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "dropout": 0.0},
}  # fmt: skip


def save_arctax_ckpt(path: Path, name: str = "encoder_decoder", **extra_hp) -> torch.nn.Module:
    """Write a checkpoint with the layout training writes (Lightning dict, ``model.`` prefix)."""
    torch.manual_seed(0)
    model = build_model(name, TINY_MODELS[name])
    ckpt = {
        "epoch": 0,
        "global_step": 1,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {
            "model_name": name, "model_cfg": TINY_MODELS[name], "trial69": {}, "k": 2, **extra_hp,
        },
    }  # fmt: skip
    torch.save(ckpt, path)
    return model


def synthetic_per_query(
    model: str, seed: int, correct: dict[str, list[bool]], categories: dict[str, str]
) -> pd.DataFrame:
    """A per-query table like ``evaluate`` writes, from per-task lists of query correctness."""
    rows = []
    for task, flags in correct.items():
        for q, ok in enumerate(flags):
            rows.append({
                "model": model, "seed": seed, "task_id": task, "category": categories[task],
                "query": q, "gen_shape": "3x3", "target_shape": "3x3",
                "shape_correct": True, "grid_correct": ok, "grid_correct_first": ok,
                "cell_acc": 1.0 if ok else 0.5, "tf_token_acc": 0.9, "tf_grid_correct": ok,
                "paper_grid_correct": ok, "paper_cells_right": 8 if ok else 6, "paper_cells": 8,
                "attempts": 1,
            })  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


EVIL = """
from pathlib import Path

Path({marker!r}).write_text("imported")  # runs on import: it must never run
Champion = object
"""


def evil_code(directory: Path) -> tuple[str, str, Path]:
    """Code a hostile checkpoint asks for: ``(file form, module form, marker)``. Importing
    either writes ``marker``; the module form needs ``directory`` on ``sys.path``."""
    marker = directory / "IMPORTED"
    (directory / "evil_file.py").write_text(EVIL.format(marker=str(marker)))
    pkg = directory / "evilpkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "payload.py").write_text(EVIL.format(marker=str(marker)))
    return f"{directory / 'evil_file.py'}:Champion", "evilpkg.payload:Champion", marker


def save_evil_ckpt(path: Path, class_path: str, name: str = "mine") -> Path:
    """A real tiny checkpoint whose hyper-parameters name ``name`` and ``class_path``."""
    save_arctax_ckpt(path, "encoder_decoder")
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"].update(model_name=name, model_class=class_path)
    torch.save(ckpt, path)
    return path
