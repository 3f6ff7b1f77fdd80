"""Length-grouped batches: little padding, reproducible, a new order per epoch, DDP splits."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from arctax.data.datamodule import ARCDataModule, LengthGroupedBatchSampler, real_token_fraction
from arctax.settings import load_settings
from tests.conftest import prepared

MODELS = ("champion", "encoder_decoder", "decoder_only")


@pytest.fixture(scope="module")
def default_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    prepared(load_settings(), out)
    return out


def test_real_token_fraction_grouped_vs_random(default_data):
    print()
    for model in MODELS:
        dm = ARCDataModule(default_data, model, batch_size=32)
        g = real_token_fraction(dm, 32, grouped=True)
        r = real_token_fraction(dm, 32, grouped=False)
        print(f"real-token fraction {model:<16} grouped {g:.1%}  random {r:.1%}")
        assert g > r + 0.3
        assert g >= (0.90 if model == "decoder_only" else 0.75)


def test_real_token_fraction_from_lengths():
    one = np.array([10, 10, 20, 20])
    assert real_token_fraction(one, 2, grouped=True) == 1.0
    assert real_token_fraction(one, 4, grouped=False) == 60 / 80
    two = np.array([[10, 5], [5, 10]])  # source and target padded separately
    assert real_token_fraction(two, 2) == 30 / 40


def test_every_example_once_per_epoch_and_new_order_each_epoch():
    lengths = np.random.default_rng(0).integers(5, 500, 1000)
    s = LengthGroupedBatchSampler(lengths, 32, seed=3)
    e0 = list(s)
    assert sorted(i for b in e0 for i in b) == list(range(1000))
    assert e0 == list(LengthGroupedBatchSampler(lengths, 32, seed=3))
    s.set_epoch(1)
    assert list(s) != e0
    assert list(LengthGroupedBatchSampler(lengths, 32, seed=4)) != e0


def _shards(lengths, batch, n, epoch=0):
    out = []
    for r in range(n):
        s = LengthGroupedBatchSampler(lengths, batch, seed=5, num_replicas=n, rank=r)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


@pytest.mark.parametrize("epoch", [0, 1])
def test_ddp_ranks_split_each_global_batch(epoch):
    """Step i of every rank together is global batch i of one process: disjoint, complete."""
    lengths = np.random.default_rng(1).integers(5, 500, 100)
    one = LengthGroupedBatchSampler(lengths, 8, seed=5)
    one.set_epoch(epoch)
    glob = list(one)
    shards = _shards(lengths, 8, 2, epoch)
    assert len(shards[0]) == len(shards[1]) == len(glob) == 13  # one step per global batch
    for step, g in enumerate(glob):
        a, b = shards[0][step], shards[1][step]
        assert not set(a) & set(b) and sorted(a + b) == sorted(g)
    assert sorted(i for sh in shards for b in sh for i in b) == list(range(100))  # each once


def test_short_global_batch_pads_a_rank_never_repeats_a_sample():
    lengths = np.arange(17)  # 8 + 8 + 1: the last global batch has fewer samples than ranks
    shards = _shards(lengths, 8, 4)
    assert [len(sh) for sh in shards] == [3, 3, 3, 3]
    real = [i for sh in shards for b in sh for i in b if i >= 0]
    assert sorted(real) == list(range(17))  # every sample once, none twice
    pads = [(step, b) for sh in shards for step, b in enumerate(sh) if any(i < 0 for i in b)]
    assert len(pads) == 3 and all(len(b) == 1 for _, b in pads)  # ranks 1-3, one padding each
    step = pads[0][0]
    assert all(b == [~shards[0][step][0]] for _, b in pads)  # a copy of the batch's own sample


def test_devices_must_divide_the_global_batch():
    with pytest.raises(ValueError, match="32 cannot be split evenly over 3"):
        LengthGroupedBatchSampler(np.arange(10), 32, num_replicas=3)


def test_padding_sample_has_no_labels(tiny_data):
    dm = ARCDataModule(tiny_data, "champion", batch_size=4)
    dm.setup()
    ds = dm.splits["train"]
    plain = dm.collate([ds[0], ds[1]])
    padded = dm.collate([ds[0], {**ds[1], "padding": True}])
    assert torch.equal(plain["labels"][0], padded["labels"][0])
    assert (plain["labels"][1] != -100).any() and (padded["labels"][1] == -100).all()
    assert torch.equal(plain["src"], padded["src"])  # same inputs: only the loss ignores it


def test_datamodule_batches_by_model(tiny_data):
    for model, key in (("champion", "ctx"), ("encoder_decoder", "src"), ("decoder_only", "seq")):
        dm = ARCDataModule(tiny_data, model, batch_size=8)
        dm.setup()
        batch = next(iter(dm.train_dataloader()))
        assert key in batch and batch["labels"].shape[0] <= 8
        assert len(dm.val_dataloader()) == -(-len(dm.splits["val"]) // 8)
        val = [int(i) for b in dm.val_dataloader() for i in b["example_idx"]]
        assert sorted(val) == list(range(len(dm.splits["val"])))  # every val example once


class _Recorder(pl.LightningModule):
    """Records which examples each training step sees (a real fit loop, no model)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, list[int]]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch["example_idx"].tolist()))
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(data_dir, tmp_path, seed):
    rec = _Recorder()
    trainer = pl.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(rec, datamodule=ARCDataModule(data_dir, "decoder_only", batch_size=4, seed=seed))
    return [[b for e, b in rec.seen if e == epoch] for epoch in range(3)]


def test_lightning_fit_shuffles_per_epoch_reproducibly(tiny_data, tmp_path):
    run = _fit(tiny_data, tmp_path, seed=1)
    assert run[0] != run[1] != run[2]
    assert all(
        sorted(i for b in ep for i in b) == sorted(i for b in run[0] for i in b) for ep in run
    )
    assert run == _fit(tiny_data, tmp_path, seed=1)
    assert run != _fit(tiny_data, tmp_path, seed=2)
