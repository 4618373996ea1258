"""Streaming shard reader that gives every DDP rank exactly the same number of batches, and resumes mid-epoch.

Training (``training=True``), two ways to deal shards to the ``world_size * num_workers`` reader slots:

- *Permuted* (default): every epoch the shard list is permuted with a seed shared by all ranks and dealt
  round-robin to the slots. A slot that runs out of shards before its quota starts its shards again (a resampled
  pass); a slot with more stops at its quota. Best when there are at least as many shards as slots.
- *Resampled* (``resample=True``, webdataset's ``ResampledShards`` idea): each slot draws shards at random, with
  replacement and weighted by their sample counts, from its own seeded stream. Any number of shards works for any
  number of nodes; an epoch is then a fixed number of samples (``epoch_samples``), not a pass over the data.

Either way each rank yields ``epoch_samples // world_size // batch_size`` full batches (``epoch_samples`` defaults to
the split's size), split over its workers in the DataLoader's round-robin order, so no rank ever waits for another
(no DDP hang). Every random choice comes from a stream seeded by (seed, epoch, rank, reader role): runs are
reproducible and ranks and workers never share a stream.

Resuming (`EpochDataLoader.state_dict`): the position is (epoch, batches consumed this epoch). A resumed loader
replays the same seeded streams and skips the consumed batches, so with the same world size, workers, batch size and
seed it yields exactly the batches the interrupted run would have yielded next. Tar shards have no index, so the
skipped samples are read again (not decoded or collated): resuming late in a long epoch costs one pass of reading.

Evaluation (``training=False``): the samples, in manifest order, are cut into contiguous equal ranges per rank
(ceil(S / world_size)); the last range is padded by repeating its final sample, flagged ``is_padding`` so metrics
can drop it. Every sample is seen exactly once across ranks. Batches are built inside the worker processes, so
only collated tensors cross the process boundary.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, get_worker_info

from mmcrystal.data.batch import MultimodalBatch, collate_samples
from mmcrystal.data.shards import decode_sample, iter_shard

__all__ = [
    "ShardInfo",
    "ShardDataset",
    "InMemoryCrystalDataset",
    "ResumableSampler",
    "EpochDataLoader",
    "count_samples",
    "seed_worker",
]

log = logging.getLogger(__name__)


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


def _share(n: int, parts: int, index: int) -> int:
    """How many of n round-robin items (0, 1, 2, ... dealt to parts) go to part `index`."""
    return n // parts + (1 if index < n % parts else 0)


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
        resample: Draw shards with replacement per reader slot instead of dealing a permutation (training only).
        epoch_samples: Samples per epoch over all ranks (training only); default: the split's size.
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
        resample: bool = False,
        epoch_samples: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if epoch_samples is not None and epoch_samples < 1:
            raise ValueError(f"epoch_samples must be >= 1 or None, got {epoch_samples}")
        self.shards, self.batch_size, self.training = list(shards), batch_size, training
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self._rank, self._world = rank, world_size
        self.property_names, self.fields = property_names, fields
        self.resample, self.epoch_samples = resample, epoch_samples
        self.epoch = 0
        self.skip_batches = 0  # loader batches of this epoch already consumed (set by EpochDataLoader on resume)
        self.total = sum(s.samples for s in self.shards)
        if training and not any(s.samples > 0 for s in self.shards):
            raise ValueError("ShardDataset: every training shard is empty; nothing to train on")

    # ----------------------------------------------------------------------------------------- bookkeeping
    def rank_world(self) -> tuple[int, int]:
        rank, world = _distributed_rank_world()
        return (self._rank if self._rank is not None else rank), (self._world if self._world is not None else world)

    def rank_samples(self) -> int:
        _, world = self.rank_world()
        if self.training:
            return (self.epoch_samples or self.total) // world
        return math.ceil(self.total / world)

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
        if not self.training:
            mine = _share(n_batches, num_workers, worker)
            first = worker * (n_batches // num_workers) + min(worker, n_batches % num_workers)
            if mine:
                yield from self._eval_batches(rank, first, mine)
            return
        # The DataLoader asks workers for batches round-robin from worker 0, so loader batch j comes from the reader
        # "role" j % W. After skipping s batches, worker w must play role (w + s) % W to keep that order.
        skip = min(self.skip_batches, n_batches)
        role = (worker + skip) % num_workers
        role_skip = _share(skip, num_workers, role)
        role_total = _share(n_batches, num_workers, role)
        if role_total > role_skip:
            yield from self._train_batches(rank, world, role, num_workers, role_skip, role_total)

    # ----------------------------------------------------------------------------------------- training
    def _slot_shards(self, rng: random.Random, slot: int, slots: int) -> list[ShardInfo]:
        order = [i for i, shard in enumerate(self.shards) if shard.samples > 0]  # empty shards would spin forever
        rng.shuffle(order)
        picked = [self.shards[i] for i in order[slot::slots]]
        # More slots than shards: fall back to one shard per slot, chosen round-robin (samples then repeat).
        return picked or [self.shards[order[slot % len(order)]]]

    def _train_batches(self, rank, world, role, num_workers, skip, total) -> Iterator[MultimodalBatch]:
        """Batches `skip` .. `total` - 1 of reader role `role`; skipped batches are read but not decoded."""
        slots, slot = world * num_workers, rank * num_workers + role
        local = random.Random(f"{self.seed}/{self.epoch}/{rank}/{role}")
        if self.resample:
            stream = self._shuffled(self._resampled(local), local)
        else:
            shared = random.Random(f"{self.seed}/{self.epoch}")  # same on every rank
            stream = self._cycle(self._slot_shards(shared, slot, slots), local)
        for _ in range(skip * self.batch_size):
            next(stream)
        for index in range(skip, total):
            samples = [decode_sample(next(stream), self.fields) for _ in range(self.batch_size)]
            # caption choice from its own per-batch stream, so skipping batches needs no collation
            captions_rng = random.Random(f"{self.seed}/{self.epoch}/{rank}/{role}/batch{index}")
            yield collate_samples(samples, self.property_names, captions_rng)

    def _cycle(self, shards: list[ShardInfo], rng: random.Random) -> Iterator[dict[str, bytes]]:
        """Passes over the slot's shards (raw sample files, decoded later), each in a new order and shuffled through
        the buffer, drained per pass, so a pass yields every sample once before any repeats."""
        while True:
            order = list(shards)
            rng.shuffle(order)
            yield from self._shuffled((files for shard in order for _, files in iter_shard(shard.url)), rng)

    def _resampled(self, rng: random.Random) -> Iterator[dict[str, bytes]]:
        """Shards drawn with replacement, weighted by sample count, for ever."""
        candidates = [s for s in self.shards if s.samples > 0]
        weights = [s.samples for s in candidates]
        while True:
            shard = rng.choices(candidates, weights)[0]
            for _, files in iter_shard(shard.url):
                yield files

    def _shuffled(self, stream: Iterator, rng: random.Random) -> Iterator:
        """Shuffle through a buffer of `shuffle_buffer` items."""
        if self.shuffle_buffer <= 1:
            yield from stream
            return
        buffer: list = []
        for item in stream:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            k = rng.randrange(len(buffer))
            buffer[k], item = item, buffer[k]
            yield item
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
    """Map-style dataset over decoded samples held in RAM (small datasets)."""

    def __init__(self, samples: list[dict]):
        self.samples = samples

    @classmethod
    def from_shards(cls, shards: list[ShardInfo], fields=("z", "frac", "lattice", "xrd", "dos", "image")):
        return cls([decode_sample(files, fields) for s in shards for _, files in iter_shard(s.url)])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (per-rank shard of a seeded permutation, padded to equal length) that can start
    `skip_samples` into its first epoch after a resume. Being a DistributedSampler, Lightning keeps it as is."""

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool, seed: int, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.skip_samples = 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip_samples = self.skip_samples, 0  # only the first pass after a resume starts late
        return iter(indices[skip:])


class _CountingIterator:
    """Wraps a DataLoader iterator and counts the batches it hands out (for `state_dict` without a trainer)."""

    def __init__(self, iterator, owner: EpochDataLoader):
        self._iterator, self._owner = iterator, owner

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._iterator)
        self._owner._consumed += 1
        return batch

    def __len__(self):
        return len(self._iterator)


class EpochDataLoader(DataLoader):
    """DataLoader that sets its dataset's (or sampler's) epoch before each pass and can resume mid-epoch.

    Args:
        epoch_fn: Returns the epoch to load (for example ``lambda: trainer.current_epoch``), so a resumed run
            reshuffles like the original; default: count passes.
        position_fn: Returns the data position as (epoch, batches of it the consumer has finished), from
            Lightning's progress counters. Without it, the loader counts the batches its iterator handed out.
        seed: Mixed with the epoch and `rank` into the `torch.Generator` that seeds worker processes, so loading
            never draws from (and never shifts) the global torch RNG the model trains with.
        rank: This process's rank (for the worker seeds).
        resumable: Track and restore the data position (training loaders); evaluation loaders always start at 0.

    ``state_dict()`` / ``load_state_dict()`` hold the data position (epoch, batches consumed, layout). Lightning
    stores it in checkpoints and restores it before the first pass of a resumed run (see the module docstring for
    what is guaranteed).
    """

    def __init__(
        self,
        *args,
        epoch_fn: Callable[[], int] | None = None,
        position_fn: Callable[[], tuple[int, int]] | None = None,
        seed: int = 0,
        rank: int = 0,
        resumable: bool = True,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.epoch_fn, self.position_fn = epoch_fn, position_fn
        self.seed, self.rank, self.resumable = seed, rank, resumable
        self._passes = 0
        self._epoch = 0
        self._consumed = 0
        self._resume: dict | None = None

    def _layout(self) -> dict:
        dataset = self.dataset
        if isinstance(dataset, ShardDataset):
            world = dataset.rank_world()[1]
        else:
            world = getattr(self.sampler, "num_replicas", 1)
        return {"world_size": world, "num_workers": self.num_workers, "batches": len(self)}

    def state_dict(self) -> dict:
        """The data position: the next batch is batch ``consumed_batches`` of epoch ``epoch``."""
        if self.position_fn is not None:
            epoch, consumed = self.position_fn()
        else:
            epoch, consumed = self._epoch, self._consumed
            if consumed >= len(self):  # a finished epoch: the next batch opens the following one
                epoch, consumed = epoch + 1, 0
        return {"epoch": int(epoch), "consumed_batches": int(consumed), **self._layout()}

    def load_state_dict(self, state: dict) -> None:
        layout = {k: state.get(k) for k in self._layout()}
        if layout != self._layout():
            log.warning(
                "resuming with a different data layout (%s, was %s): skipping %d batches of epoch %d, but they are "
                "not the batches the interrupted run saw",
                self._layout(), layout, state["consumed_batches"], state["epoch"],
            )  # fmt: skip
        self._resume = dict(state)

    def __iter__(self):
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._passes
        skip = 0
        if self._resume is not None and self.resumable:
            # the first pass after a resume continues the saved position (Lightning may create this iterator
            # before it advances its own epoch counter past a finished epoch)
            epoch, skip = int(self._resume["epoch"]), int(self._resume["consumed_batches"])
            self._resume = None
        self._passes, self._epoch = epoch + 1, epoch
        if isinstance(self.dataset, ShardDataset):
            self.dataset.epoch, self.dataset.skip_batches = epoch, skip
        elif isinstance(self.sampler, ResumableSampler):
            self.sampler.set_epoch(epoch)
            self.sampler.skip_samples = skip * (self.batch_size or 1)
        self._consumed = skip
        # worker seeds from (seed, epoch, rank) rather than from the global RNG
        self.generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 10_007 + self.rank) % 2**63)
        iterator = super().__iter__()
        return _CountingIterator(iterator, self) if self.resumable and self.position_fn is None else iterator


def seed_worker(worker_id: int) -> None:
    """Seed numpy/random in loader workers from torch's per-worker seed (distinct per rank, epoch and worker)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
