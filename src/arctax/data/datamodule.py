"""LightningDataModule over the prepared cache, with length-grouped batches."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from arctax.data.collate import MODEL_FORMAT, collate
from arctax.data.dataset import PreparedSplit, grouping_key, load_split


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length, so little compute goes to padding.

    Each epoch (``set_epoch``) draws a seeded permutation, cuts it into pools of
    ``pool_batches`` batches, sorts each pool by length, cuts batches and shuffles their
    order. Without ``shuffle`` batches are cut from the globally length-sorted order.
    Under DDP each rank takes every ``num_replicas``-th batch (padded to equal counts, like
    ``DistributedSampler``); the Trainer needs ``use_distributed_sampler=False``, since Lightning
    cannot inject its own sampler into a custom batch sampler.

    Lightning 2.6 calls ``set_epoch`` only on ``loader.sampler`` and ``batch_sampler.sampler``,
    never on the batch sampler itself, and builds the first epoch's iterator before that call:
    so :class:`ARCDataModule` sets ``epoch_fn`` and the epoch is read when iteration starts.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        pool_batches: int = 64,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.pool = pool_batches * batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.epoch_fn: Callable[[], int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (a new, reproducible shuffle per epoch)."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """All batches of the current epoch (before sharding)."""
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(n)
        out: list[list[int]] = []
        for p in range(0, n, self.pool):
            chunk = perm[p : p + self.pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            out += [
                chunk[i : i + self.batch_size].tolist()
                for i in range(0, len(chunk), self.batch_size)
            ]
        return [out[i] for i in rng.permutation(len(out))]

    def __iter__(self) -> Iterator[list[int]]:
        if self.epoch_fn is not None:
            self.epoch = self.epoch_fn()
        b = self.batches()
        if self.num_replicas > 1:
            per = math.ceil(len(b) / self.num_replicas)
            b = (b + b[: per * self.num_replicas - len(b)])[self.rank :: self.num_replicas]
        return iter(b)

    def __len__(self) -> int:
        n = math.ceil(len(self.lengths) / self.batch_size)
        return math.ceil(n / self.num_replicas)


def real_token_fraction(
    source: ARCDataModule | np.ndarray, batch_size: int, grouped: bool = True, seed: int = 0
) -> float:
    """Share of non-PAD positions in one epoch of training batches (epoch 0 of ``seed``).

    ``source`` is an :class:`ARCDataModule` (its train split, in its model's format) or token
    lengths: ``(N,)`` for one padded sequence (decoder-only) or ``(N, 2)`` for a source and a
    target padded separately (seq2seq, champion; the champion's context is not counted).
    ``grouped=False`` gives seeded random batches for comparison.
    """
    if isinstance(source, ARCDataModule):
        source.setup("fit")
        s, t = source.splits["train"].token_lengths()
        one_seq = MODEL_FORMAT[source.model_name] == "decoder_only"
        lengths = s + t if one_seq else np.stack([s, t], axis=1)
    else:
        lengths = np.asarray(source, dtype=np.int64)
    key = grouping_key(lengths) if grouped else np.zeros(len(lengths))
    real = total = 0
    for b in LengthGroupedBatchSampler(key, batch_size, seed).batches():
        part = lengths[b].reshape(len(b), -1)
        real += int(part.sum())
        total += len(b) * int(part.max(axis=0).sum())
    return real / max(total, 1)


class ARCDataModule(pl.LightningDataModule):
    """Train/val/test loaders for one model over the prepared cache in ``data_dir``."""

    def __init__(
        self,
        data_dir: str | Path,
        model_name: str,
        batch_size: int,
        k: int = 2,
        num_workers: int = 0,
        seed: int = 0,
        group_by_length: bool = True,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.model_name = model_name
        self.batch_size = batch_size
        self.k = k
        self.num_workers = num_workers
        self.seed = seed
        self.group_by_length = group_by_length
        self.collate = functools.partial(collate, fmt=MODEL_FORMAT[model_name], k=k)
        self.splits: dict[str, PreparedSplit] = {}
        self.resume_epoch = 0

    def state_dict(self) -> dict[str, int]:
        """Saved with each checkpoint: the epoch whose batch order comes next."""
        trainer = self.trainer
        return {"next_epoch": trainer.current_epoch + 1 if trainer is not None else 0}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        # On resume Lightning builds the first iterator before its epoch counter catches up
        # with the checkpoint; this makes that iterator draw the order of the right epoch.
        self.resume_epoch = int(state_dict.get("next_epoch", 0))

    def setup(self, stage: str | None = None) -> None:
        """Open the splits (cheap: plain arrays)."""
        for split in ("train", "val", "test"):
            if split not in self.splits:
                self.splits[split] = load_split(self.data_dir, split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.splits[split]
        trainer = self.trainer
        replicas = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        if shuffle and not self.group_by_length:
            lengths = np.zeros(len(ds))  # random batches: every length equal, order shuffled
        else:
            lengths = ds.lengths(self.model_name)
        sampler = LengthGroupedBatchSampler(
            lengths, self.batch_size, self.seed, shuffle, num_replicas=replicas, rank=rank
        )
        if trainer is not None:  # a new order each epoch, reproducible after a resume
            sampler.epoch_fn = lambda: max(trainer.current_epoch, self.resume_epoch)
        return DataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            # a private generator: creating an epoch's iterator then draws nothing from the
            # global RNG, so dropout streams match between a resumed and a straight run
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
