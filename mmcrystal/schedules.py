"""Learning-rate schedules shared by the Lightning tasks and the in-process fine-tuning loop (no Lightning import)."""

from __future__ import annotations

import math

import torch

__all__ = ["warmup_cosine"]


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, min_lr_ratio: float, total_steps: int) -> dict:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` of each group's lr at
    ``total_steps``; returned in Lightning's ``{"optimizer", "lr_scheduler": {...}}`` form."""
    total, warmup = max(int(total_steps), 1), max(int(warmup_steps), 0)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
