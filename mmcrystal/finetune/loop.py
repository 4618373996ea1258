"""The in-process training loop and batched prediction of a `PropertyModel` (no Trainer, no run folder).

Used by cross-validation (many short, seeded runs) and by `PropertyPredictor.fine_tune` (the design loop's
surrogate update). The Lightning task trains the same model with the same loss (`property_loss`) and optimiser
(`build_finetune_optimizer`). Deterministic given the seed on one CPU thread: batch order comes from a seeded
generator and dropout draws from a forked, seeded RNG.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mmcrystal.data.batch import collate_samples
from mmcrystal.finetune.heads import property_loss
from mmcrystal.finetune.model import PropertyModel, batch_targets
from mmcrystal.finetune.tuning import build_finetune_optimizer

__all__ = ["LoopSettings", "train_in_process", "predict_draws", "summarize_draws", "enable_mc_dropout"]


@dataclass
class LoopSettings:
    """A short in-process fine-tuning run (fields named as `OptimConfig`'s, which the optimiser reads).

    Attributes:
        steps: Optimiser steps.
        batch_size: Crystals per step.
        lr: Peak learning rate of the head (backbone scaled by the tuning recipe).
        weight_decay: Decoupled weight decay.
        betas: Adam betas.
        warmup_steps: Linear warm-up steps.
        min_lr_ratio: Cosine floor as a fraction of ``lr``.
        grad_clip: Gradient-norm clip (0 disables).
        seed: Seeds batch order, caption choice and dropout.
    """

    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 10
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0


def _column_names(model: PropertyModel) -> list[str]:
    return list(dict.fromkeys(model.target_names))  # unique, in task order


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless shuffled epochs of index batches (the last, short batch of an epoch is kept if it has >= 2)."""
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            chunk = order[start : start + batch_size]
            if len(chunk) >= 2 or n < 2:
                yield chunk


def train_in_process(model: PropertyModel, samples: Sequence[dict], settings: LoopSettings) -> list[float]:
    """Train ``model`` in place for ``settings.steps`` steps on ``samples``; returns the loss of every step.

    Raises:
        ValueError: No sample has any of the model's targets.
    """
    if not samples:
        raise ValueError("no training samples")
    names = _column_names(model)
    if not any(sample["meta"]["properties"].get(n) is not None for sample in samples for n in names):
        raise ValueError(f"no training sample has any of the targets {names}")
    parts = build_finetune_optimizer(model, settings, model.config.tuning, settings.steps)
    optimizer, scheduler = parts["optimizer"], parts["lr_scheduler"]["scheduler"]
    generator = torch.Generator().manual_seed(settings.seed)
    captions = random.Random(settings.seed)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    device = model.target_mean.device
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model.train()
        batches = _batches(len(samples), settings.batch_size, generator)
        for _ in range(settings.steps):
            batch = collate_samples([samples[i] for i in next(batches)], names, captions)
            values, mask = batch_targets(batch, model.target_names)
            outputs = model.forward_batch(batch)
            loss, _ = property_loss(outputs, values.to(device), mask.to(device), model.targets,
                                    model.target_mean, model.target_std)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def enable_mc_dropout(model: nn.Module) -> int:
    """Put every dropout layer with p > 0 in training mode (the rest stays in eval); returns how many there are."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            module.train()
            count += 1
    return count


@torch.no_grad()
def predict_draws(
    model: PropertyModel, samples: Sequence[dict], batch_size: int = 128, mc_samples: int = 0, seed: int = 0
) -> list[list[np.ndarray]]:
    """Predictions of ``model`` for ``samples``: one draw (eval mode) or ``mc_samples`` MC-dropout draws (Gal &
    Ghahramani 2016). Each draw is a list over tasks of (N,) values / probabilities or (N, C) class probabilities.

    Raises:
        ValueError: ``mc_samples > 1`` on a model without dropout (its draws would all be equal).
    """
    names = _column_names(model)
    draws = max(int(mc_samples), 1)
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(draws):
            model.eval()
            if draws > 1 and enable_mc_dropout(model) == 0:
                raise ValueError("mc_samples > 1 needs dropout > 0 in the model (head.dropout); this model has none")
            parts: list[list[torch.Tensor]] = [[] for _ in model.targets]
            for start in range(0, len(samples), batch_size):
                batch = collate_samples(list(samples[start : start + batch_size]), names)
                for t, value in enumerate(model.predictions(model.forward_batch(batch))):
                    parts[t].append(value.float().cpu())
            out.append([torch.cat(p).numpy() for p in parts])
    model.eval()
    return out


def summarize_draws(draws: Sequence[Sequence[np.ndarray]], targets) -> tuple[np.ndarray, np.ndarray]:
    """Pool draws (ensemble members x MC samples) into (N, T) mean and std (population std over the draws).

    Regression: physical value; binary: probability of label 1; multiclass: the most probable class of the mean
    probabilities (as a float) with, as std, the spread of that class's probability over the draws.
    """
    n = len(draws[0][0])
    mean, std = np.zeros((n, len(targets))), np.zeros((n, len(targets)))
    for t, target in enumerate(targets):
        stack = np.stack([d[t] for d in draws])  # (K, N) or (K, N, C)
        if target.kind == "multiclass":
            winner = stack.mean(0).argmax(-1)  # (N,)
            mean[:, t] = winner
            std[:, t] = np.take_along_axis(stack, winner[None, :, None], axis=-1)[..., 0].std(0)
        else:
            mean[:, t], std[:, t] = stack.mean(0), stack.std(0)
    return mean, std
