"""Token vocabulary and the grid <-> token formats of the three models.

A grid of height H and width W becomes ``H * (W + 1) + 1`` tokens: its cells row by row,
an end-of-row marker ``EOR`` after each row and an end-of-grid marker ``EOS`` at the end.
Every token carries its real ``(row, col)``: cell ``(r, c)``; ``EOR`` of row ``r`` sits at
``(r, W)``; ``EOS`` at ``(H, 0)``. So cell 3 of a 3x3 grid is ``(1, 0)``, never ``(0, 3)``.

The markers make a generated answer self-describing: a decoder stops at ``EOS`` and
``decode_grid`` rebuilds the shape from the ``EOR`` positions, refusing ragged rows.

Decoder inputs carry the coordinate of the token they predict (the *next* token). That
coordinate is a function of the prefix alone (count the ``EOR`` tokens and the cells since
the last one), so it leaks nothing and a generator can compute it step by step with
:class:`PositionTracker`.
"""

from __future__ import annotations

import numpy as np

# Colours 0..9 are their own tokens; the rest are special.
N_COLOURS = 10
PAD = 10  # padding (the original's token 10)
SEP = 11  # decoder-only separator between input and output
BOS = 12  # start of an encoder-decoder / champion target
EOR = 13  # end of row
EOS = 14  # end of grid
VOCAB_SIZE = 15
IGNORE_INDEX = -100  # label value for positions that carry no loss
SPECIAL_NAMES = {PAD: "PAD", SEP: "SEP", BOS: "BOS", EOR: "EOR", EOS: "EOS"}


def grid_len(h: int, w: int) -> int:
    """Number of tokens of an ``h x w`` grid in the marker format."""
    return h * (w + 1) + 1


def encode_grid(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid -> ``(tokens (L,), pos (L, 2))`` with end-of-row/end-of-grid markers.

    ``pos[:, 0]`` is the row and ``pos[:, 1]`` the column of every token.
    """
    g = np.asarray(grid)
    h, w = g.shape
    body = np.concatenate([g, np.full((h, 1), EOR, dtype=g.dtype)], axis=1).reshape(-1)
    tokens = np.concatenate([body, np.array([EOS], dtype=g.dtype)]).astype(np.int64)
    rows = np.repeat(np.arange(h), w + 1)
    cols = np.tile(np.arange(w + 1), h)
    pos = np.stack([np.append(rows, h), np.append(cols, 0)], axis=1).astype(np.int64)
    return tokens, pos


def encode_cells(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid -> cells only, ``(tokens (H*W,), pos (H*W, 2))``: the context encoder's format."""
    g = np.asarray(grid)
    h, w = g.shape
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return g.reshape(-1).astype(np.int64), np.stack([rr.ravel(), cc.ravel()], 1).astype(np.int64)


def decode_grid(tokens: np.ndarray | list[int]) -> np.ndarray | None:
    """Tokens (up to and including the first ``EOS``) -> grid, or ``None`` if malformed.

    Malformed: no ``EOS``, no rows, ragged rows, an empty row, or a special token in a row.
    """
    rows: list[list[int]] = []
    row: list[int] = []
    for t in (int(x) for x in tokens):
        if t == EOS:
            if row or not rows or len({len(r) for r in rows}) != 1:
                return None
            return np.array(rows, dtype=np.int64)
        if t == EOR:
            if not row:
                return None
            rows.append(row)
            row = []
        elif 0 <= t < N_COLOURS:
            row.append(t)
        else:
            return None
    return None


class PositionTracker:
    """Coordinates of the next token of a grid being generated, one state per batch row.

    ``pos`` is ``(B, 2)``: the (row, col) the next token will occupy. ``advance(tokens)``
    moves it past the tokens just emitted: a colour moves one column right, ``EOR`` starts
    the next row; anything else leaves it (the sequence is finished or broken).
    """

    def __init__(self, batch_size: int) -> None:
        self.pos = np.zeros((batch_size, 2), dtype=np.int64)

    def advance(self, tokens: np.ndarray) -> np.ndarray:
        """Update with the emitted ``tokens (B,)`` and return the new ``(B, 2)`` positions."""
        t = np.asarray(tokens)
        colour = t < N_COLOURS
        eor = t == EOR
        self.pos[colour, 1] += 1
        self.pos[eor, 0] += 1
        self.pos[eor, 1] = 0
        return self.pos


def target_positions(pos: np.ndarray) -> np.ndarray:
    """Decoder-input coordinates for a target whose own token coordinates are ``pos``.

    Under the next-token convention the input at step ``t`` (``BOS`` or output ``t-1``)
    carries the coordinate of output ``t``, i.e. exactly the target's own coordinates.
    """
    return pos


def format_seq2seq(inp: np.ndarray, out: np.ndarray) -> dict[str, np.ndarray]:
    """Encoder-decoder / champion example: source, shifted target input and labels.

    ``tgt_in = [BOS] + out_tokens[:-1]``; ``labels = out_tokens``: the decoder at step ``t``
    sees outputs ``< t`` only, so it can never copy the token it must predict.
    """
    src, src_pos = encode_grid(inp)
    out_tok, out_pos = encode_grid(out)
    tgt_in = np.concatenate([[BOS], out_tok[:-1]]).astype(np.int64)
    return {
        "src": src,
        "src_pos": src_pos,
        "tgt_in": tgt_in,
        "tgt_pos": target_positions(out_pos),
        "labels": out_tok,
    }


def format_decoder_only(inp: np.ndarray, out: np.ndarray) -> dict[str, np.ndarray]:
    """Decoder-only example: ``[input] SEP [output]`` with loss on the output tokens only.

    ``seq = in_tokens + [SEP] + out_tokens[:-1]`` and ``labels[i]`` is the token that
    follows ``seq[i]``: ``IGNORE_INDEX`` over the input, the output tokens from ``SEP`` on.
    """
    src, _ = encode_grid(inp)
    out_tok, _ = encode_grid(out)
    seq = np.concatenate([src, [SEP], out_tok[:-1]]).astype(np.int64)
    labels = np.concatenate([np.full(len(src), IGNORE_INDEX), out_tok]).astype(np.int64)
    return {"seq": seq, "labels": labels, "prompt_len": np.int64(len(src) + 1)}
