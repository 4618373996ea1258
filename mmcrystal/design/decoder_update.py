"""Decoder updates in the design loop: fine-tune the diffusion decoder on accepted candidates (S.U.N. hits) with
the oracle's property values as their conditions, so that later rounds sample more crystals like them. This is the
"optionally, of the decoder" half of the loop's update step (the surrogate half is in loop.py).

Per round with new hits: `steps` AdamW steps at a small learning rate on batches drawn from every hit so far (a
growing replay buffer, so one round's hits do not overwrite the previous ones), with the training objective
itself (`CrystalDiffusionModel.losses`: the same corruption, condition dropout and atom-count loss). Only the
denoiser and the atom-count head move; the condition encoder (frozen text / XRD encoders, property embeddings)
stays, so a condition keeps meaning what it meant in training. All randomness comes from (seed, update index), so
a resumed loop that replays the finished rounds' updates gets the same weights as an uninterrupted one.

The known failure of this update is diversity collapse (the decoder memorises its hits); the loop's diversity
monitor watches for it, and `steps` x `lr` keeps each update small.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["DecoderFineTuner"]

log = logging.getLogger(__name__)


class DecoderFineTuner:
    """`decoder_update(generator, structures, rows) -> generator` for `run_design` (module docstring).

    Args:
        steps: Optimiser steps per update (per round with at least one new hit).
        lr: AdamW learning rate (the decoder was trained at ~1e-3; updates should nudge, not retrain).
        batch_size: Crystals per step, drawn with replacement from all hits so far.
        property_names: Row keys holding the oracle values to condition on (default: the decoder's conditioned
            properties that the rows carry).
        seed: Seed of the draws; update u uses (seed, u).
        max_grad_norm: Gradient clipping.
    """

    def __init__(
        self,
        steps: int = 20,
        lr: float = 1e-5,
        batch_size: int = 16,
        property_names: Sequence[str] | None = None,
        seed: int = 0,
        max_grad_norm: float = 1.0,
    ) -> None:
        if steps < 1 or batch_size < 1 or not lr > 0:
            raise ValueError(f"steps, batch_size and lr must be positive, got {steps}, {batch_size}, {lr}")
        self.steps, self.lr, self.batch_size, self.seed = int(steps), float(lr), int(batch_size), int(seed)
        self.property_names = None if property_names is None else list(property_names)
        self.max_grad_norm = float(max_grad_norm)
        self.buffer: list[tuple[Any, dict[str, float], dict]] = []  # (structure, conditions, decoded sample)
        self.updates = 0
        self.history: list[dict[str, float]] = []

    def _seed(self) -> int:
        digest = hashlib.sha256(f"decoder-update:{self.seed}:{self.updates}".encode()).digest()
        return int.from_bytes(digest[:7], "little")

    def __call__(self, generator, structures: Sequence, rows: Sequence[dict]):
        """Add the round's hits to the buffer and fine-tune `generator.model` in place; returns the generator."""
        from mmcrystal.data.batch import collate_samples
        from mmcrystal.finetune.data import structure_sample

        model = generator.model
        conditioned = list(model.config.conditions.properties) if "properties" in model.conditions.names else []
        names = self.property_names if self.property_names is not None else conditioned
        for structure, row in zip(structures, rows, strict=True):
            values = {n: float(row[n]) for n in names if n in row and row[n] is not None and math.isfinite(row[n])}
            # converted to a sample once, when it joins the buffer (steps draw from it many times)
            self.buffer.append((structure, values, structure_sample(structure, f"hit{len(self.buffer)}", values)))
        if not structures or not self.buffer:
            return generator
        seed = self._seed()
        rng = np.random.default_rng(seed)
        noise = torch.Generator(device=model.atom_count_prior.device).manual_seed(seed)
        params = [p for m in (model.denoiser, model.num_atoms) for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
        model.train()
        losses = []
        try:
            for _ in range(self.steps):
                picks = rng.integers(len(self.buffer), size=self.batch_size)
                batch = collate_samples([self.buffer[i][2] for i in picks], property_names=list(conditioned))
                loss = model.losses(batch, generator=noise)["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                optimizer.step()
                losses.append(float(loss.detach()))
        finally:
            model.eval()  # the generator samples in eval mode
        self.updates += 1
        record = {"update": self.updates, "hits": len(structures), "buffer": len(self.buffer),
                  "loss_first": losses[0], "loss_last": losses[-1]}  # fmt: skip
        self.history.append(record)
        log.info("decoder update %d: %d new hits, buffer %d, loss %.3f -> %.3f", self.updates, len(structures),
                 len(self.buffer), losses[0], losses[-1])  # fmt: skip
        return generator
