"""LightningDataModule over the prepared cache, with length-grouped batches."""

from __future__ import annotations

import functools
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Sampler

from arctax.data.collate import MODEL_FORMAT, Batch, collate
from arctax.data.dataset import CacheError, PreparedSplit, grouping_key, load_split
from arctax.data.tokenize import IGNORE_INDEX
from arctax.lifecycle import STOP_SIGNALS


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length, so little compute goes to padding.

    Each epoch (``set_epoch``) draws a seeded permutation, cuts it into pools of
    ``pool_batches`` batches, sorts each pool by length, cuts batches and shuffles their
    order. Without ``shuffle`` batches are cut from the globally length-sorted order.

    ``batch_size`` is the GLOBAL batch (Trial 69's 32, whatever the number of processes).
    Under DDP every rank builds the same global batches as one process would (same seed, same
    epoch order) and takes its share of each, ``batch[rank::num_replicas]``, so every rank runs
    one step per global batch and the ranks together see exactly the one-process batches.
    ``num_replicas`` must divide ``batch_size``. A global batch with fewer samples than ranks
    (only ever a short last batch) leaves a rank without a sample: it gets a padding copy of
    the batch's first sample, yielded as ``~index`` (negative), which :class:`ARCDataModule`
    turns into a sample whose labels are all ignored (weight 0). Never a second real copy:
    that would count one sample twice in the loss. The Trainer needs
    ``use_distributed_sampler=False``, since Lightning cannot inject its own sampler into a
    custom batch sampler.

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
        if batch_size % num_replicas:
            raise ValueError(
                f"global batch {batch_size} cannot be split evenly over {num_replicas} processes"
            )
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

    def shard(self, batch: list[int]) -> list[int]:
        """This rank's share of one global batch (a padding ``~index`` if it has no sample)."""
        if self.num_replicas == 1:
            return batch
        return batch[self.rank :: self.num_replicas] or [~batch[0]]

    def __iter__(self) -> Iterator[list[int]]:
        if self.epoch_fn is not None:
            self.epoch = self.epoch_fn()
        return iter([self.shard(b) for b in self.batches()])

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)  # one step per global batch


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
        one_seq = source.fmt == "decoder_only"
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


class _WithPadding(torch.utils.data.Dataset):
    """A split that also answers ``~i`` (a padding sample from the sampler): example ``i``,
    marked so that :func:`_collate_padded` ignores all its labels."""

    def __init__(self, ds: PreparedSplit) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            return {**self.ds[~i], "padding": True}
        return self.ds[i]


def _collate_padded(examples: list[dict], fmt: str, k: int) -> Batch:
    """:func:`collate`, with every label of a padding sample set to ``IGNORE_INDEX``."""
    batch = collate(examples, fmt=fmt, k=k)
    pad = torch.tensor([bool(e.get("padding")) for e in examples])
    if pad.any():
        batch["labels"][pad] = IGNORE_INDEX
    return batch


# Stop signals (arctax.lifecycle's) belong to the trainer process. scancel, preemption and GNU
# timeout signal every process of the job step, DataLoader workers included, and torch's SIGTERM
# handler in a worker exits on any sender but its parent: the trainer then fails with "DataLoader
# worker (pid ...) is killed by signal: Terminated" (exit 1) instead of stopping at the next
# batch (exit 75).


def _watch_stop_signals(parent: int) -> None:
    """Take the (blocked) stop signals as they come: the parent's SIGTERM (``Process.terminate``
    in the DataLoader's shutdown and multiprocessing's exit handler) ends the worker, as torch's
    handler does; the same signal from anyone else (the job step's group) is dropped."""
    while True:
        info = signal.sigwaitinfo(STOP_SIGNALS)
        if info.si_signo == signal.SIGTERM and info.si_pid == parent:
            os._exit(0)


def worker_init(worker_id: int, rank: int = 0) -> None:
    """A DataLoader worker leaves the stop signals to its trainer, which got the same signal,
    stops at the next batch and shuts its workers down itself; the worker still exits when the
    trainer terminates it (or dies). Then Lightning's own worker seeding
    (``seed_everything(workers=True)``), which it adds only to a loader without a
    ``worker_init_fn``."""
    # The signals stay blocked (by _Loader, from the fork on): one thread takes them, so none
    # ever meets torch's handler, and a terminate() from the trainer is never ignored (with
    # SIG_IGN a trainer exiting with live workers hung in multiprocessing's exit handler).
    threading.Thread(
        target=_watch_stop_signals, args=(os.getppid(),), name="stop-signals", daemon=True
    ).start()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank)


class _Loader(DataLoader):
    """A DataLoader whose workers are forked with the stop signals blocked, and keep them
    blocked: one that arrives before :func:`worker_init` stays pending for its watcher thread
    instead of meeting torch's handler, which a worker installs first."""

    def _get_iterator(self):
        if self.num_workers == 0:
            return super()._get_iterator()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super()._get_iterator()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class ARCDataModule(pl.LightningDataModule):
    """Train/val/test loaders for one model over the prepared cache in ``data_dir``."""

    def __init__(
        self,
        data_dir: str | Path,
        fmt: str,
        batch_size: int,
        k: int = 2,
        num_workers: int = 0,
        seed: int = 0,
        group_by_length: bool = True,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        # a batch format (seq2seq, champion, decoder_only: the model's ``fmt``), or for the
        # built-in models their name
        self.fmt = MODEL_FORMAT.get(fmt, fmt)
        self.batch_size = batch_size
        self.k = k
        self.num_workers = num_workers
        self.seed = seed
        self.group_by_length = group_by_length
        self.collate = functools.partial(_collate_padded, fmt=self.fmt, k=k)
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
        """Open the splits (cheap: plain arrays); ``test`` only where it is (a training cache
        has none: each test set is a folder of its own)."""
        for split in ("train", "val", "test"):
            if split not in self.splits:
                if split == "test" and not (Path(self.data_dir) / "test.npz").is_file():
                    continue
                self.splits[split] = load_split(self.data_dir, split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.splits[split]
        trainer = self.trainer
        replicas = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        if shuffle and not self.group_by_length:
            lengths = np.zeros(len(ds))  # random batches: every length equal, order shuffled
        else:
            lengths = ds.lengths(self.fmt)
        sampler = LengthGroupedBatchSampler(
            lengths, self.batch_size, self.seed, shuffle, num_replicas=replicas, rank=rank
        )
        if trainer is not None:  # a new order each epoch, reproducible after a resume
            sampler.epoch_fn = lambda: max(trainer.current_epoch, self.resume_epoch)
        return _Loader(
            _WithPadding(ds),
            batch_sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            worker_init_fn=functools.partial(worker_init, rank=rank),
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
        if "test" not in self.splits:
            raise CacheError(
                f"{self.data_dir}: no test.npz (training data; each test set is prepared in a "
                "folder of its own, results/<run>/data/test/<name>/)"
            )
        return self._loader("test", shuffle=False)
