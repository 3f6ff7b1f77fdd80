"""Token format: round trips on every ARC-AGI-1 grid, real coordinates, batch formats."""

import numpy as np
import pytest

from arctax.data.collate import collate
from arctax.data.tokenize import (
    BOS,
    EOR,
    EOS,
    IGNORE_INDEX,
    PAD,
    SEP,
    PositionTracker,
    decode_grid,
    encode_grid,
    grid_len,
)
from tests.conftest import make_example


def test_round_trip_every_arc1_grid(arc1):
    n = 0
    for tasks in arc1:
        for task in tasks:
            for a, b in list(task.train) + list(task.test):
                for g in (np.array(a), np.array(b)):
                    tokens, pos = encode_grid(g)
                    assert len(tokens) == grid_len(*g.shape) == len(pos)
                    back = decode_grid(tokens)
                    assert back is not None and np.array_equal(back, g)
                    n += 1
    assert n == 7000  # inputs and outputs of all 800 tasks (3,500 pairs)


def test_tokens_carry_real_coordinates():
    g = np.arange(9).reshape(3, 3)
    tokens, pos = encode_grid(g)
    cell_rows = pos[tokens < 10]
    # cell 3 of a 3x3 grid is (1, 0), not the flat (0, 3) of the original (bug 3)
    assert tuple(cell_rows[3]) == (1, 0)
    assert tuple(pos[tokens == EOS][0]) == (3, 0)
    assert [tuple(p) for p in pos[tokens == EOR]] == [(0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize(
    "tokens",
    [
        [1, 2, EOR, 3, EOR, EOS],
        [1, 2, EOR],
        [EOS],
        [1, EOR, 2, EOS],
        [1, PAD, EOR, EOS],
        [EOR, EOS],
    ],
)
def test_malformed_answers_decode_to_none(tokens):
    assert decode_grid(tokens) is None


def test_position_tracker_matches_encoding(arc1):
    g = np.array(arc1[0][0].test[0][1])
    tokens, pos = encode_grid(g)
    tr = PositionTracker(1)
    seen = [tuple(tr.pos[0])]
    for t in tokens[:-1]:
        seen.append(tuple(tr.advance(np.array([t]))[0]))
    assert seen == [tuple(p) for p in pos]


def test_seq2seq_target_is_shifted(arc1):
    b = collate([make_example(arc1[0][i], idx=i) for i in range(3)], "seq2seq")
    real = b["tgt_mask"]
    assert (b["tgt_in"][:, 0] == BOS).all()
    # labels[t] == tgt_in[t + 1] on real positions (bug 4: no shift)
    assert (b["labels"][:, :-1][real[:, 1:]] == b["tgt_in"][:, 1:][real[:, 1:]]).all()
    assert (b["labels"][~real] == IGNORE_INDEX).all()
    assert (b["tgt_pos"] >= 0).all()


def test_decoder_only_loss_mask_covers_output_only(arc1):
    ex = make_example(arc1[0][0])
    b = collate([ex], "decoder_only")
    n_in = grid_len(*ex["query_in"].shape)
    n_out = grid_len(*ex["query_out"].shape)
    assert b["seq"][0, n_in] == SEP
    assert (b["labels"][0, :n_in] == IGNORE_INDEX).all()
    assert (b["labels"][0, n_in:] != IGNORE_INDEX).sum() == n_out
    assert int(b["prompt_len"][0]) == n_in + 1


def test_champion_context_is_masked_per_pair(arc1):
    ex = make_example(arc1[0][0])
    ex2 = dict(make_example(arc1[0][1], idx=1), context=ex["context"][:1])
    b = collate([ex, ex2], "champion", k=2)
    assert b["ctx"].shape[:3] == (2, 2, 2)
    assert b["ctx_pair_mask"].tolist() == [[True, True], [True, False]]
    assert not b["ctx_mask"][1, 1].any()
    assert (b["ctx"][1, 1] == PAD).all()
