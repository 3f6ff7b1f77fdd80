"""Greedy decoding with and without the key/value cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from harness import MODELS, Batch, Row, Timed, interleave, to_device
from torch import nn

from arctax.data.collate import MODEL_FORMAT, collate
from arctax.data.dataset import PreparedSplit
from arctax.data.tokenize import EOS
from arctax.evaluation.decode import greedy_decode
from arctax.models import build_model
from arctax.settings import Settings


class FixedLength(nn.Module):
    """Masks ``EOS`` so greedy decoding runs exactly ``max_new_tokens`` steps on every sample.

    Random weights would stop at a random step (or never), which makes cache/no-cache timings
    depend on luck; with EOS masked both loops do the same, fixed amount of work.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.fmt = model.fmt

    @staticmethod
    def _mask(logits: torch.Tensor) -> torch.Tensor:
        logits[..., EOS] = float("-inf")
        return logits

    def forward(self, batch: Batch) -> torch.Tensor:
        return self._mask(self.model(batch))

    def start(self, batch: Batch) -> tuple[torch.Tensor, Any]:
        logits, cache = self.model.start(batch)
        return self._mask(logits), cache

    def step(self, cache: Any, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self._mask(self.model.step(cache, token, pos))


def bench_decoding(cfg: Settings, test: PreparedSplit, s: Any, dev: torch.device) -> list[Row]:
    """Greedy decoding of ARC-AGI-1 evaluation test pairs, with and without the KV cache."""
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(test), size=min(s.decode_pairs, len(test)), replace=False))
    rows: list[Row] = []
    for name in MODELS:
        torch.manual_seed(0)
        model = FixedLength(build_model(name, cfg.models[name].config())).to(dev)
        batch = to_device(collate([test[int(i)] for i in idx], MODEL_FORMAT[name]), dev)
        steps: list[np.ndarray] = []

        def run(cache: bool, m: nn.Module = model, b: Batch = batch, out: list = steps) -> None:
            out.append(greedy_decode(m, b, s.decode_steps, use_cache=cache)[1])

        v = [Timed("cache", [lambda: run(True)], dev), Timed("naive", [lambda: run(False)], dev)]
        interleave(v, s.reps, f"decoding {name} {dev.type}")
        if not all((st == s.decode_steps).all() for st in steps):
            raise RuntimeError(f"{name}: decoding did not run the fixed {s.decode_steps} steps")
        n = len(idx)
        steps_note = f"{s.decode_steps} tokens per pair"
        rows += [
            ("decode", f"{name}: test pairs/s, KV cache", f"{n / v[0].seconds:.2f}", steps_note),
            ("decode", f"{name}: test pairs/s, no cache", f"{n / v[1].seconds:.2f}", steps_note),
            (
                "decode",
                f"{name}: RATIO cache / no cache",
                f"{v[1].seconds / v[0].seconds:.1f}x",
                "target >= 5x",
            ),
        ]
    return rows
