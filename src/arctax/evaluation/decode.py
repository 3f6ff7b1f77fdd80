"""Greedy decoding of answers: with a key/value cache (one token per step) or naively.

The naive loop re-runs ``forward`` over the whole prefix every step; it is the oracle in tests
and the baseline in the benchmark. Both stop a sample at its ``EOS``; :func:`greedy_tokens`
returns the tokens, :func:`greedy_decode` the grids they form (``decode_grid``: ``None`` for
a malformed answer).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from arctax.data.tokenize import BOS, EOR, EOS, N_COLOURS, PAD, SEP, decode_grid

Batch = dict[str, torch.Tensor]


def _naive_logits(model: nn.Module, batch: Batch, out: torch.Tensor, pos: torch.Tensor):
    """Logits for the next token given the answer prefix ``out (B, t)`` with coordinates ``pos``."""
    b, t = out.shape
    dev = out.device
    if model.fmt == "decoder_only":
        plen = batch["prompt_len"]
        p = int(plen.max())
        idx = torch.arange(p + t, device=dev)
        prompt = torch.where(idx[None, :p] < plen[:, None], batch["seq"][:, :p], PAD)
        # place each sample's answer right after its own prompt
        seq = torch.full((b, p + t), PAD, dtype=torch.long, device=dev)
        seq[:, :p] = prompt
        cols = plen[:, None] + torch.arange(t, device=dev)[None, :]
        seq.scatter_(1, cols, out)
        logits = model({"seq": seq})
        return logits[torch.arange(b, device=dev), plen - 1 + t]
    tgt_in = torch.cat([torch.full((b, 1), BOS, dtype=torch.long, device=dev), out], 1)
    mb = dict(batch)
    mb["tgt_in"], mb["tgt_pos"] = tgt_in, pos
    return model(mb)[:, -1]


SYNC_EVERY = 8  # decoding steps between the host's checks that every sample has ended


def to_device(batch: Batch, dev: torch.device) -> Batch:
    """A CPU batch on ``dev``: on CUDA through pinned memory and asynchronous copies (a
    pageable copy makes the host wait for the GPU's queue first)."""
    if dev.type != "cuda":
        return {name: v.to(dev) for name, v in batch.items()}
    return {name: v.pin_memory().to(dev, non_blocking=True) for name, v in batch.items()}


def advance_positions(pos: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """:class:`~arctax.data.tokenize.PositionTracker` on the device: the ``(B, 2)`` (row, col)
    of the next token after ``tokens (B,)``: a colour moves one column right, ``EOR`` starts
    the next row, anything else leaves it. No host round trip per token."""
    eor = tokens == EOR
    row = pos[:, 0] + eor
    col = torch.where(eor, 0, pos[:, 1] + (tokens < N_COLOURS))
    return torch.stack([row, col], 1)


@torch.inference_mode()
def greedy_tokens(
    model: nn.Module, batch: Batch, max_new_tokens: int, use_cache: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy answer tokens for a batch: ``(tokens (B, t), generated token counts (B,))``.

    A sample that has emitted ``EOS`` is padded with ``EOS`` up to the longest sample, so the
    tokens of two decoding loops compare element by element (the smoke test compares them).
    ``use_cache`` defaults to the model's ``supports_cache`` (True unless a model declares
    the fallback: full re-decoding with ``forward`` each step, slower, same answers).

    Everything stays on the device: positions advance there (:func:`advance_positions`) and
    the host asks whether every sample has ended only every :data:`SYNC_EVERY` steps; the
    steps decoded past the last ``EOS`` are cut off, so the answer is the one a check at every
    step gives, token for token.
    """
    if use_cache is None:
        use_cache = bool(getattr(model, "supports_cache", True))
    was_training = model.training
    model.eval()
    try:
        ref = batch["seq"] if model.fmt == "decoder_only" else batch["src"]
        b, dev = ref.shape[0], ref.device
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        steps = torch.zeros(b, dtype=torch.long, device=dev)
        banned = torch.tensor([PAD, SEP, BOS], device=dev)  # never valid inside an answer
        tokens: list[torch.Tensor] = []
        positions = [torch.zeros(b, 2, dtype=torch.long, device=dev)]
        if use_cache:
            logits, cache = model.start(batch)
        for t in range(max_new_tokens):
            if not use_cache:
                prefix = torch.stack(tokens, 1) if tokens else ref.new_zeros(b, 0)
                logits = _naive_logits(model, batch, prefix, torch.stack(positions, 1))
            logits = logits.float().index_fill_(1, banned, float("-inf"))
            nxt = logits.argmax(-1).masked_fill(done, EOS)
            tokens.append(nxt)
            steps += (~done).long()
            done |= nxt == EOS
            if t == max_new_tokens - 1 or ((t + 1) % SYNC_EVERY == 0 and bool(done.all())):
                break
            positions.append(advance_positions(positions[-1], nxt))
            if use_cache:
                logits = model.step(cache, nxt, positions[-1])
        n = steps.cpu().numpy()
        out = torch.stack(tokens, 1) if tokens else ref.new_zeros(b, 0)
        return out[:, : int(n.max(initial=0))].cpu().numpy(), n
    finally:
        model.train(was_training)


def greedy_decode(
    model: nn.Module, batch: Batch, max_new_tokens: int, use_cache: bool | None = None
) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Greedy answers for a batch: ``(grids, generated token counts)``.

    ``grids[i]`` is the decoded grid of sample ``i`` or ``None`` if its tokens do not form one.
    """
    out, steps = greedy_tokens(model, batch, max_new_tokens, use_cache)
    return [decode_grid(row) for row in out], steps


BLANK = np.zeros(
    (1, 1), dtype=np.int64
)  # the batch format needs an output; decoding never reads it


def answer_inputs(
    model: nn.Module,
    k: int,
    items: list[tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]],
    max_new_tokens: int,
) -> list[np.ndarray | None]:
    """Greedy answers for ``(test input, context pairs)`` items, batched as given.

    Only inputs and demonstrations go in: the output slot holds a blank, which neither the
    encoder nor greedy decoding reads (the decoder-only prompt stops at ``SEP``).
    """
    from arctax.data.collate import collate

    dev = next(model.parameters()).device
    examples = [
        {"query_in": x, "query_out": BLANK, "context": list(ctx), "task_idx": 0, "example_idx": j}
        for j, (x, ctx) in enumerate(items)
    ]
    batch = to_device(collate(examples, model.fmt, k), dev)
    grids, _ = greedy_decode(model, batch, max_new_tokens)
    return grids
