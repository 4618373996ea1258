"""Exponential moving average of a network's weights (Polyak averaging), the weights diffusion models sample with.

theta_ema <- d theta_ema + (1 - d) theta after every optimiser step. With `warmup`, d = min(decay, (1 + n) / (10 + n))
after n updates (TensorFlow's `ExponentialMovingAverage(num_updates=...)`), so the average is not dominated by the
random initialisation early in training. The averaged copy is a submodule: it moves with `.to(device)`, is saved in
Lightning checkpoints and is left out of optimisers (its parameters do not require gradients).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA(nn.Module):
    """An averaged copy of `module`, always in eval mode.

    Args:
        module: The network to average (copied; the copy starts equal to it).
        decay: Decay d per update (0.999: an average over roughly the last 1,000 steps).
        warmup: Use d = min(decay, (1 + n) / (10 + n)) after n updates.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay}")
        self.decay, self.warmup = float(decay), warmup
        self.module = copy.deepcopy(module).requires_grad_(False).eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> EMA:
        super().train(mode)
        self.module.eval()
        return self

    def current_decay(self) -> float:
        """The decay the next update will use."""
        n = int(self.num_updates) + 1
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One averaging step towards `module`'s current weights (buffers are copied)."""
        weight = 1.0 - self.current_decay()
        for avg, new in zip(self.module.parameters(), module.parameters(), strict=True):
            avg.lerp_(new.detach().to(avg.dtype), weight)
        for avg, new in zip(self.module.buffers(), module.buffers(), strict=True):
            avg.copy_(new)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into `module` (same architecture)."""
        module.load_state_dict(self.module.state_dict())

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
