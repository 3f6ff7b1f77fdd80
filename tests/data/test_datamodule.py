"""Length-grouped batches: little padding, reproducible, a new order per epoch, DDP shards."""

import numpy as np
import pytest

from arctax.config import load_config
from arctax.data.datamodule import ARCDataModule, LengthGroupedBatchSampler, real_token_fraction
from arctax.data.dataset import load_split
from arctax.data.prepare import prepare


@pytest.fixture(scope="module")
def default_train(tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    prepare(load_config(), out)
    return load_split(out, "train")


def test_real_token_fraction_grouped_vs_random(default_train):
    ds = default_train
    print()
    for model in ("champion", "encoder_decoder", "decoder_only"):
        grouped = LengthGroupedBatchSampler(ds.lengths(model), 32, seed=0).batches()
        rand = LengthGroupedBatchSampler(np.zeros(len(ds)), 32, seed=0).batches()
        g, r = real_token_fraction(ds, grouped, model), real_token_fraction(ds, rand, model)
        print(f"real-token fraction {model:<16} grouped {g:.1%}  random {r:.1%}")
        assert g > r + 0.3
    dec = LengthGroupedBatchSampler(ds.lengths("decoder_only"), 32, seed=0).batches()
    assert real_token_fraction(ds, dec, "decoder_only") >= 0.90


def test_every_example_once_per_epoch_and_new_order_each_epoch():
    lengths = np.random.default_rng(0).integers(5, 500, 1000)
    s = LengthGroupedBatchSampler(lengths, 32, seed=3)
    e0 = list(s)
    assert sorted(i for b in e0 for i in b) == list(range(1000))
    assert e0 == list(LengthGroupedBatchSampler(lengths, 32, seed=3))
    s.set_epoch(1)
    assert list(s) != e0


def test_ddp_ranks_get_disjoint_equal_shards():
    lengths = np.arange(100)
    shards = [list(LengthGroupedBatchSampler(lengths, 8, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 7
    flat = [tuple(b) for sh in shards for b in sh]
    assert {i for b in flat for i in b} == set(range(100))


def test_datamodule_batches_by_model(tiny_data):
    for model, key in (("champion", "ctx"), ("encoder_decoder", "src"), ("decoder_only", "seq")):
        dm = ARCDataModule(tiny_data, model, batch_size=8)
        dm.setup()
        batch = next(iter(dm.train_dataloader()))
        assert key in batch and batch["labels"].shape[0] <= 8
        assert len(dm.val_dataloader()) == -(-len(dm.splits["val"]) // 8)
