"""KV-cached greedy decoding equals the naive loop and the teacher-forced forward."""

import numpy as np
import pytest
import torch

from arctax.data.collate import MODEL_FORMAT, collate
from arctax.data.dataset import load_split
from arctax.data.tokenize import PositionTracker
from arctax.evaluation.decode import greedy_decode
from arctax.models import build_model
from arctax.settings import load_settings
from tests.conftest import TINY_MODELS, make_example, memorise

NAMES = ["champion", "encoder_decoder", "decoder_only"]


@pytest.fixture(scope="module")
def test_examples(arc1):
    ev = list(arc1[1])
    return [make_example(ev[i], split="test", idx=i) for i in range(6)]


@pytest.mark.parametrize("name", NAMES)
def test_start_step_logits_equal_forward(name, test_examples):
    # float64: the cached and the full forward take different kernels; in float32 their last
    # bits differ by CPU (AVX-512 / AVX2 / default), in float64 far below the tolerance
    torch.manual_seed(0)
    model = build_model(name, TINY_MODELS[name]).double().eval()
    b = collate(test_examples, MODEL_FORMAT[name])
    with torch.no_grad():
        full = model(b)
        logits, cache = model.start(b)
        labels = b["labels"]
        first = (labels != -100).float().argmax(1)  # first answer position per sample
        rows = torch.arange(len(labels))
        tracker = PositionTracker(len(labels))
        for t in range(8):
            assert torch.allclose(logits, full[rows, first + t], atol=1e-10), (name, t)
            tok = labels[rows, first + t].clamp(min=0)
            pos = torch.from_numpy(tracker.advance(tok.numpy()).copy())
            logits = model.step(cache, tok, pos)


AS_RUN_EXP2 = {**TINY_MODELS["encoder_decoder"], "positions": "grid2d_flat", "init": "xavier",
               "embed_scale": True, "embedding": "perminv_table"}  # fmt: skip


def test_start_step_equals_forward_with_flat_positions_over_whole_answers(test_examples):
    """``grid2d_flat`` needs the grid's width, which decoding learns when row 0 ends: the cached
    logits equal the forward's on every token of every answer (all rows, not only the first)."""
    torch.manual_seed(0)
    model = build_model("perminv", AS_RUN_EXP2, "arctax.models.encoder_decoder:EncoderDecoder")
    model = model.double().eval()
    b = collate(test_examples, "seq2seq")
    labels = b["labels"]
    n = int((labels != -100).sum(1).min())
    assert n > int(b["tgt_pos"][:, :, 1].max()) + 1  # past the end of row 0 everywhere
    with torch.no_grad():
        full = model(b)
        logits, cache = model.start(b)
        tracker = PositionTracker(len(labels))
        for t in range(n):
            assert torch.allclose(logits, full[:, t], atol=1e-10), t
            tok = labels[:, t]
            pos = torch.from_numpy(tracker.advance(tok.numpy()).copy())
            logits = model.step(cache, tok, pos)


@pytest.mark.parametrize("name", NAMES)
def test_cached_equals_naive(name, test_examples):
    # float64, so that no argmax is a near-tie that kernel differences between CPUs could flip
    torch.manual_seed(1)
    model = build_model(name, TINY_MODELS[name]).double()
    b = collate(test_examples, MODEL_FORMAT[name])
    g1, n1 = greedy_decode(model, b, 40, use_cache=True)
    g2, n2 = greedy_decode(model, b, 40, use_cache=False)
    assert np.array_equal(n1, n2)
    for a, c in zip(g1, g2, strict=True):
        assert (a is None and c is None) or np.array_equal(a, c)
    assert model.training  # mode restored


def test_decodes_a_memorised_answer(tiny_data):
    """A model that has memorised four answers (every answer token wins by a clear margin)
    must generate each of them exactly, shape included: the end markers set the shape.

    Trained to a criterion, not for a fixed number of steps: the steps needed differ between
    CPUs (AVX-512, AVX2, default kernels), the property tested does not."""
    torch.manual_seed(0)
    ds = load_split(tiny_data, "train")
    exs = [ds[i] for i in range(4)]
    model = build_model("encoder_decoder", dict(TINY_MODELS["encoder_decoder"], dropout=0.0))
    b = collate(exs, "seq2seq")
    memorise(model, b, lr=load_settings().trial69.optimizer.lr)
    grids, _ = greedy_decode(model, b, 200)
    for g, e in zip(grids, exs, strict=True):
        assert g is not None and np.array_equal(g, e["query_out"])


# ---- fewer host syncs: the answers of a check at every step, token for token --------------


@torch.inference_mode()
def _every_step_loop(model, batch, max_new):
    """The loop before (the oracle): positions tracked on the host, every step synced."""
    from arctax.data.tokenize import BOS, EOS, PAD, SEP

    model.eval()
    ref = batch["seq"] if model.fmt == "decoder_only" else batch["src"]
    b = ref.shape[0]
    tracker = PositionTracker(b)
    done = torch.zeros(b, dtype=torch.bool)
    steps = torch.zeros(b, dtype=torch.long)
    tokens = []
    logits, cache = model.start(batch)
    for t in range(max_new):
        logits = logits.float()
        logits[:, [PAD, SEP, BOS]] = float("-inf")
        nxt = logits.argmax(-1).masked_fill(done, EOS)
        tokens.append(nxt)
        steps += (~done).long()
        done |= nxt == EOS
        if bool(done.all()) or t == max_new - 1:
            break
        pos = torch.from_numpy(tracker.advance(nxt.numpy()).copy())
        logits = model.step(cache, nxt, pos)
    return torch.stack(tokens, 1).numpy(), steps.numpy()


class _EndsAt(torch.nn.Module):
    """The model, but sample i emits EOS at its ``ends[i]``-th generated token."""

    def __init__(self, model, ends):
        super().__init__()
        self.model, self.fmt, self.ends = model, model.fmt, torch.tensor(ends)

    def _force(self, logits, t):
        logits[self.ends <= t, 14] = 1e9  # EOS
        return logits

    def start(self, batch):
        logits, cache = self.model.start(batch)
        return self._force(logits, 0), [cache, 0]

    def step(self, cache, token, pos):
        cache[1] += 1
        return self._force(self.model.step(cache[0], token, pos), cache[1])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("ends", "max_new"),
    [([2, 5, 9, 11], 30), ([1, 3, 4, 7], 40), ([3, 16, 20, 99], 18), ([99] * 4, 13), ([0] * 4, 5)],
)
def test_syncing_every_few_steps_gives_the_same_answers(name, test_examples, ends, max_new):
    """Positions on the device and the end-of-answer check every SYNC_EVERY steps: tokens and
    step counts equal the loop that synced at every token, bitwise, wherever the answers
    end (before, at or after a check; all, some or none within ``max_new``)."""
    from arctax.evaluation.decode import greedy_tokens

    torch.manual_seed(0)
    model = _EndsAt(build_model(name, TINY_MODELS[name]), ends)
    b = collate(test_examples[:4], MODEL_FORMAT[name])
    want, want_steps = _every_step_loop(model, b, max_new)
    got, got_steps = greedy_tokens(model, b, max_new)
    assert got.shape == want.shape and (got == want).all() and (got_steps == want_steps).all()
