"""Streaming shard reader that gives every DDP rank exactly the same number of batches.

Training (``training=True``): every epoch, the shard list is permuted with a seed shared by all ranks and dealt
round-robin to the ``world_size * num_workers`` reader slots. Each rank yields ``S // world_size // batch_size``
full batches (S = samples in the split), split as evenly as possible over its workers; a slot that runs out of
shards before its quota starts its shards again (a resampled pass), a slot with more stops at its quota. So no
rank ever waits for another (no DDP hang), at the cost of a few repeated samples per epoch when shards are uneven.

Evaluation (``training=False``): the samples, in manifest order, are cut into contiguous equal ranges per rank
(ceil(S / world_size)); the last range is padded by repeating its final sample, flagged ``is_padding`` so metrics
can drop it. Every sample is seen exactly once across ranks. Batches are built inside the worker processes, so
only collated tensors cross the process boundary.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from mmcrystal.data.batch import MultimodalBatch, collate_samples
from mmcrystal.data.shards import decode_sample, iter_shard

__all__ = ["ShardInfo", "ShardDataset", "InMemoryCrystalDataset", "EpochDataLoader", "count_samples"]


@dataclass(frozen=True)
class ShardInfo:
    """A shard's location (path or URL) and its number of samples."""

    url: str
    samples: int


def count_samples(url: str) -> int:
    """Count the samples of a shard by reading it once (used when no manifest gives the counts)."""
    return sum(1 for _ in iter_shard(url))


def _distributed_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardDataset(IterableDataset):
    """Yields collated `MultimodalBatch`es from tar shards (use with ``DataLoader(batch_size=None)``).

    Args:
        shards: The split's shards with their sample counts.
        batch_size: Crystals per batch.
        training: Shuffle, resample and drop the ragged tail (see module docstring); else exact, padded coverage.
        shuffle_buffer: Samples held for shuffling within a reader slot (training only).
        seed: Base seed; the epoch, rank and worker are mixed in.
        rank: This process's rank; None reads torch.distributed (or 0).
        world_size: Number of ranks; None reads torch.distributed (or 1).
        property_names: Property columns of the batch (the manifest's ``property_names``).
        fields: Array fields to decode; modalities not listed are not decoded.
    """

    def __init__(
        self,
        shards: list[ShardInfo],
        batch_size: int,
        training: bool,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        property_names: list[str] | None = None,
        fields: tuple[str, ...] = ("z", "frac", "lattice", "xrd", "dos", "image"),
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.shards, self.batch_size, self.training = list(shards), batch_size, training
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self._rank, self._world = rank, world_size
        self.property_names, self.fields = property_names, fields
        self.epoch = 0
        self.total = sum(s.samples for s in self.shards)

    # ----------------------------------------------------------------------------------------- bookkeeping
    def rank_world(self) -> tuple[int, int]:
        rank, world = _distributed_rank_world()
        return (self._rank if self._rank is not None else rank), (self._world if self._world is not None else world)

    def rank_samples(self) -> int:
        _, world = self.rank_world()
        return self.total // world if self.training else math.ceil(self.total / world)

    def __len__(self) -> int:
        """Batches this rank yields per epoch (identical on every rank)."""
        n = self.rank_samples()
        return n // self.batch_size if self.training else math.ceil(n / self.batch_size)

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def __iter__(self) -> Iterator[MultimodalBatch]:
        worker, num_workers = self._worker()
        rank, world = self.rank_world()
        n_batches = len(self)
        mine = n_batches // num_workers + (1 if worker < n_batches % num_workers else 0)
        if mine == 0:
            return
        if self.training:
            yield from self._train_batches(rank, world, worker, num_workers, mine)
        else:
            first = worker * (n_batches // num_workers) + min(worker, n_batches % num_workers)
            yield from self._eval_batches(rank, first, mine)

    # ----------------------------------------------------------------------------------------- training
    def _slot_shards(self, rng: random.Random, slot: int, slots: int) -> list[ShardInfo]:
        order = [i for i, shard in enumerate(self.shards) if shard.samples > 0]  # empty shards would spin forever
        rng.shuffle(order)
        picked = [self.shards[i] for i in order[slot::slots]]
        # More slots than shards: fall back to one shard per slot, chosen round-robin (samples then repeat).
        return picked or [self.shards[order[slot % len(order)]]]

    def _train_batches(self, rank, world, worker, num_workers, n_batches) -> Iterator[MultimodalBatch]:
        slots, slot = world * num_workers, rank * num_workers + worker
        shared = random.Random(f"{self.seed}/{self.epoch}")  # same on every rank
        local = random.Random(f"{self.seed}/{self.epoch}/{rank}/{worker}")
        stream = self._cycle(self._slot_shards(shared, slot, slots), local)
        batch: list[dict] = []
        for sample in stream:
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield collate_samples(batch, self.property_names, local)
                batch, n_batches = [], n_batches - 1
                if n_batches == 0:
                    return

    def _cycle(self, shards: list[ShardInfo], rng: random.Random) -> Iterator[dict]:
        """Passes over the slot's shards, each in a new order and shuffled through the buffer (drained per pass, so
        a pass yields every sample once before any repeats)."""
        while True:
            order = list(shards)
            rng.shuffle(order)
            yield from self._shuffled(
                (decode_sample(files, self.fields) for shard in order for _, files in iter_shard(shard.url)), rng
            )

    def _shuffled(self, stream: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if self.shuffle_buffer <= 1:
            yield from stream
            return
        buffer: list[dict] = []
        for sample in stream:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            k = rng.randrange(len(buffer))
            buffer[k], sample = sample, buffer[k]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    # ----------------------------------------------------------------------------------------- evaluation
    def _eval_batches(self, rank: int, first_batch: int, n_batches: int) -> Iterator[MultimodalBatch]:
        per_rank = self.rank_samples()
        rank_start = rank * per_rank
        real_end = min(rank_start + per_rank, self.total)  # global indices of real samples end here
        start = rank_start + first_batch * self.batch_size
        stop = min(rank_start + (first_batch + n_batches) * self.batch_size, rank_start + per_rank)
        real_stop = max(start, min(stop, real_end))

        def padded() -> Iterator[dict]:
            last = None
            for last in self._range(start, real_stop):
                yield last
            if stop > real_stop:
                pad = last if last is not None else next(self._range(self.total - 1, self.total))
                for _ in range(stop - real_stop):
                    yield {**pad, "is_padding": True}

        batch: list[dict] = []
        for sample in padded():
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield collate_samples(batch, self.property_names)
                batch = []
        if batch:
            yield collate_samples(batch, self.property_names)

    def _range(self, begin: int, end: int) -> Iterator[dict]:
        """Decoded samples with global indices in [begin, end), reading only the shards that overlap."""
        offset = 0
        for shard in self.shards:
            lo, hi = offset, offset + shard.samples
            offset = hi
            if hi <= begin or lo >= end:
                continue
            for index, (_, files) in enumerate(iter_shard(shard.url), start=lo):
                if index >= end:
                    break
                if index >= begin:
                    yield decode_sample(files, self.fields)


class InMemoryCrystalDataset(Dataset):
    """Map-style dataset over decoded samples held in RAM (small datasets; Lightning adds the DDP sampler)."""

    def __init__(self, samples: list[dict]):
        self.samples = samples

    @classmethod
    def from_shards(cls, shards: list[ShardInfo], fields=("z", "frac", "lattice", "xrd", "dos", "image")):
        return cls([decode_sample(files, fields) for s in shards for _, files in iter_shard(s.url)])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


class EpochDataLoader(DataLoader):
    """DataLoader that tells its `ShardDataset` the epoch before each pass (workers get a fresh copy per epoch).

    ``epoch_fn`` (for example ``lambda: trainer.current_epoch``) makes a resumed run reshuffle like the original.
    """

    def __init__(self, *args, epoch_fn: Callable[[], int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_fn = epoch_fn
        self._passes = 0

    def __iter__(self):
        if isinstance(self.dataset, ShardDataset):
            self.dataset.epoch = self.epoch_fn() if self.epoch_fn is not None else self._passes
        self._passes += 1
        return super().__iter__()


def seed_worker(worker_id: int) -> None:
    """Seed numpy/random in loader workers from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
