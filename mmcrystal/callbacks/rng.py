"""Every rank's RNG state (python, numpy, torch CPU, CUDA) in checkpoints, so a resumed run draws the same noise,
dropout masks and condition drops as an uninterrupted one.

Lightning checkpoints hold no RNG state, and each rank's differs. `RNGStateCheckpoint` gathers all ranks' states
into the checkpoint (rank 0 writes it) and each rank restores its own just before the first training batch after a
resume, after anything that runs in between (sanity validation, loader start-up). States are stored as tensors,
ints and lists, so checkpoints still load with ``torch.load(weights_only=True)``.

Exactness needs the data pipeline to leave the global RNG alone (`mmcrystal.data.loader.EpochDataLoader` seeds its
workers from its own generator) and the same world size on resume (a rank without a saved state is re-seeded and a
warning logged).
"""

from __future__ import annotations

import logging
import random

import lightning as L
import numpy as np
import torch

__all__ = ["RNGStateCheckpoint", "capture_rng_state", "restore_rng_state", "offset_seeds"]

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "rng_states"  # list, one entry per rank


def capture_rng_state() -> dict:
    """This process's python, numpy, torch (and current CUDA device's) RNG states, as checkpoint-safe values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def offset_seeds(rank: int) -> None:
    """Move this rank's generators to seeds derived from the current torch seed and the rank (rank 0 unchanged),
    so ranks started from one ``seed_everything`` value do not draw identical noise."""
    if rank == 0:
        return
    seed = (torch.initial_seed() + 1_000_003 * rank) % 2**63
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _gather(trainer: L.Trainer, state: dict) -> list[dict]:
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return [state]
    states: list = [None] * trainer.world_size
    torch.distributed.all_gather_object(states, state)
    return states


class RNGStateCheckpoint(L.Callback):
    """Saves every rank's RNG state with each checkpoint and restores it on resume.

    Args:
        distinct_rank_seeds: On a fresh (not resumed) multi-process run, give each rank its own seed derived from
            rank 0's (see `offset_seeds`).
    """

    def __init__(self, distinct_rank_seeds: bool = True):
        self.distinct_rank_seeds = distinct_rank_seeds
        self._pending: dict | None = None
        self._resumed = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._pending, self._resumed = None, False  # a checkpoint, if any, is loaded after setup

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = _gather(trainer, capture_rng_state())  # a collective: every rank dumps

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._resumed = True
        states = checkpoint.get(CHECKPOINT_KEY)
        rank = trainer.global_rank
        if states is None or rank >= len(states):
            log.warning(
                "checkpoint has no RNG state for rank %d (saved by %s ranks): this rank is re-seeded, so the resumed "
                "run's random draws differ from an uninterrupted run's",
                rank, "no" if states is None else len(states),
            )  # fmt: skip
            offset_seeds(rank)
            return
        if len(states) != trainer.world_size:
            log.warning("checkpoint holds RNG states of %d ranks, this run has %d", len(states), trainer.world_size)
        self._pending = states[rank]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._resumed and self.distinct_rank_seeds and trainer.world_size > 1:
            offset_seeds(trainer.global_rank)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self._pending is not None:
            restore_rng_state(self._pending)
            self._pending = None
