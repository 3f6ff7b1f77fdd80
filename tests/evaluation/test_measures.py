"""The two teacher-forced measurements on hand-built logits: ours (every answer token, markers
and first cell included) and the paper's as its code made it (output cells only, the first one
given, cells pooled); training logs the same numbers evaluation writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arctax.data.collate import collate
from arctax.data.tokenize import EOR, IGNORE_INDEX, VOCAB_SIZE
from arctax.evaluation.evaluate import teacher_forced
from arctax.evaluation.measures import decoder_inputs, paper_counts
from arctax.models import build_model
from arctax.training.module import answer_sums, ratios
from tests.conftest import TINY_MODELS


def _batch(*outputs: np.ndarray) -> dict[str, torch.Tensor]:
    """A seq2seq batch of these answers (any input), right-padded."""
    ex = [{"query_in": np.zeros((1, 1), int), "query_out": o, "context": [], "task_idx": 0,
           "example_idx": i} for i, o in enumerate(outputs)]  # fmt: skip
    return collate(ex, "seq2seq", 0)


def _logits(labels: torch.Tensor, wrong: dict[int, list[int]]) -> torch.Tensor:
    """One-hot logits of the labels, with the argmax moved off the label at ``wrong[i]``."""
    logits = torch.nn.functional.one_hot(labels.clamp(min=0), VOCAB_SIZE).float()
    for i, positions in wrong.items():
        for t in positions:
            logits[i, t, (labels[i, t] + 1) % 10] = 2.0  # another colour
    return logits


def test_all_cells_wrong_with_the_markers_right_is_no_cell_right():
    """A 2x2 answer: 7 tokens, 4 cells, 2 row ends, 1 end. All four cells wrong: our token
    accuracy is 3 / 7 (42.9%), the paper's cell accuracy 0 of its 3 scored cells."""
    b = _batch(np.array([[1, 2], [3, 4]]))
    labels = b["labels"]
    assert labels[0].tolist() == [1, 2, EOR, 3, 4, EOR, 14]
    (row,) = teacher_forced(_logits(labels, {0: [0, 1, 3, 4]}), labels, b["tgt_in"])
    token_acc, ours_grid, paper_grid, right, cells = row
    assert token_acc == pytest.approx(3 / 7) and not ours_grid
    assert (paper_grid, right, cells) == (False, 0, 3)


def test_only_the_first_cell_wrong_is_right_for_them_and_wrong_for_us():
    b = _batch(np.array([[1, 2], [3, 4]]), np.array([[5, 6, 7]]))
    labels = b["labels"]
    rows = teacher_forced(_logits(labels, {0: [0], 1: [0]}), labels, b["tgt_in"])
    for _token_acc, ours_grid, paper_grid, right, cells in rows:
        assert not ours_grid and paper_grid and right == cells  # the first cell is given
    assert [r[4] for r in rows] == [3, 2]  # padding (the 1x3 answer is shorter) is ignored


def test_a_marker_wrong_is_wrong_for_us_only_and_a_1x1_answer_never_right_for_them():
    """Their grids had no markers: a wrong row end is a wrong shape for us, nothing for them.
    A 1x1 answer has no scored cell; their code counted such a grid wrong."""
    b = _batch(np.array([[1, 2], [3, 4]]), np.array([[7]]))
    labels = b["labels"]
    rows = teacher_forced(_logits(labels, {0: [2]}), labels, b["tgt_in"])
    assert rows[0][1:4] == (False, True, 3)
    assert rows[1] == (1.0, True, False, 0, 0)


def test_the_paper_measurement_over_a_whole_decoder_only_sequence():
    """``loss_over: sequence``: every input cell after the first is scored too, and the first
    OUTPUT cell (the model predicts it from SEP: they scored it); markers and SEP never."""
    model = build_model("decoder_only", {**TINY_MODELS["decoder_only"], "loss_over": "sequence"})
    ex = {"query_in": np.array([[1, 2], [3, 4]]), "query_out": np.array([[5, 6]]),
          "context": [], "task_idx": 0, "example_idx": 0}  # fmt: skip
    b = collate([ex], "decoder_only", 0)
    labels = model.loss_labels(b)
    pred = labels.clamp(min=0)
    got = paper_counts(pred, labels, decoder_inputs(b))
    assert got["cells"].tolist() == [3 + 2]  # input cells 2..4, output cells 1..2
    wrong = pred.clone()
    n = int(b["prompt_len"][0]) - 1
    wrong[0, n] = 9  # the first output cell, predicted from SEP
    assert not paper_counts(wrong, labels, decoder_inputs(b))["grid"][0]


def test_training_logs_what_evaluation_writes():
    """answer_sums / ratios (the training module) and teacher_forced (evaluation) agree on both
    measurements, the paper's cells pooled over every sample."""
    outs = [np.array([[1, 2], [3, 4]]), np.array([[5, 6, 7]]), np.array([[8]])]
    b = _batch(*outs)
    labels = b["labels"]
    logits = _logits(labels, {0: [1, 3], 1: [0]})
    rows = teacher_forced(logits, labels, b["tgt_in"])
    m = ratios(answer_sums(logits, labels, b["tgt_in"]))
    assert float(m["tf_grid_acc"]) == pytest.approx(np.mean([r[1] for r in rows]))
    assert float(m["paper_grid_acc"]) == pytest.approx(np.mean([r[2] for r in rows]))
    pooled = sum(r[3] for r in rows) / sum(r[4] for r in rows)
    assert float(m["paper_cell_acc"]) == pytest.approx(pooled) == pytest.approx(3 / 5)
    tokens = (labels != IGNORE_INDEX).sum()
    assert float(m["token_acc"]) == pytest.approx((int(tokens) - 3) / int(tokens))
