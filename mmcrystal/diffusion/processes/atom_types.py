"""Absorbing-state (mask) discrete diffusion of atom types (D3PM, Austin et al. 2021; MDLM, Sahoo et al. 2024).

Classes: element Z in 1..num_classes is class Z - 1; class `num_classes` is the absorbing [MASK] state.

Forward process in continuous time: each atom keeps its type with probability alpha(t) and is masked otherwise,
independently, q(x_t | x_0) = alpha(t) onehot(x_0) + (1 - alpha(t)) onehot(MASK); alpha(t) = 1 - t ("linear", the
MDLM default) or cos(pi t / 2) ("cosine"). This is D3PM's absorbing transition with Qbar_t written directly.

Objective (chosen: MDLM's masked cross-entropy rather than D3PM's hybrid loss). With the x_0-parametrisation and
"carry-over" of unmasked tokens, the continuous-time ELBO reduces to a weighted cross-entropy on the masked atoms
only (Sahoo et al. 2024, eq. 10): L = E_t [ -alpha'(t) / (1 - alpha(t)) sum_{i masked} -log p_theta(x_0^i | x_t) ].
`weighting="elbo"` uses that weight (1 / t for the linear schedule); `weighting="uniform"` drops it (a plain masked
CE, lower variance, no longer a bound). The loss is averaged over all atoms of the batch.

Sampling is consistent with it: the reverse step is the exact posterior q(x_s | x_t, x_0) with x_0 replaced by
the network's distribution (`posterior_probs`): a masked atom is unmasked with probability
(alpha_s - alpha_t) / (1 - alpha_t), to a type drawn from p_theta(x_0 | x_t); unmasked atoms never change. At s = 0
(alpha = 1) every atom is unmasked.

Fixed composition (crystal structure prediction, `fixed_composition=True`): types are given and never corrupted,
the loss is zero and `step` returns its input. A sampler can also hold given types fixed with any model: a fully
unmasked state is left unchanged by the reverse step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmcrystal.config import register_config

__all__ = ["AtomTypeConfig", "AtomTypeProcess"]


@register_config
@dataclass
class AtomTypeConfig:
    """Config of `AtomTypeProcess`.

    Attributes:
        num_classes: Number of element classes; Z in 1..num_classes (class Z - 1). Class num_classes is [MASK].
        schedule: Keep probability alpha(t): "linear" (1 - t) or "cosine" (cos(pi t / 2)).
        weighting: "elbo" (MDLM weight -alpha' / (1 - alpha)) or "uniform" (plain masked cross-entropy).
        max_weight: Upper clamp of the ELBO weight (it diverges like 1 / t at t -> 0).
        fixed_composition: Crystal structure prediction: types are given, never diffused, and have no loss.
    """

    num_classes: int = 100
    schedule: Literal["linear", "cosine"] = "linear"
    weighting: Literal["elbo", "uniform"] = "elbo"
    max_weight: float = 100.0
    fixed_composition: bool = False


class AtomTypeProcess(nn.Module):
    """Masked diffusion over element classes `(N,)` long; times per atom `t (N,)` in [0, 1].

    Args:
        config: `AtomTypeConfig`.
    """

    def __init__(self, config: AtomTypeConfig | None = None) -> None:
        super().__init__()
        self.config = config or AtomTypeConfig()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def mask_index(self) -> int:
        """Class index of the absorbing [MASK] state."""
        return self.config.num_classes

    def to_classes(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Atomic numbers Z `(N,)` -> classes Z - 1; raises on Z outside 1..num_classes."""
        if atomic_numbers.numel() and (atomic_numbers.min() < 1 or atomic_numbers.max() > self.num_classes):
            raise ValueError(f"atomic numbers must lie in 1..{self.num_classes}")
        return atomic_numbers.long() - 1

    def to_atomic_numbers(self, classes: torch.Tensor) -> torch.Tensor:
        """Classes `(N,)` -> atomic numbers Z = class + 1 (a [MASK] maps to num_classes + 1: check first)."""
        return classes + 1

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that an atom is still unmasked at time t."""
        if self.config.schedule == "linear":
            return 1.0 - t
        if self.config.schedule == "cosine":
            return torch.cos(0.5 * math.pi * t)
        raise ValueError(f"unknown type schedule {self.config.schedule!r}")

    def elbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """-alpha'(t) / (1 - alpha(t)), clamped to `max_weight`."""
        if self.config.schedule == "linear":
            weight = 1.0 / t.clamp(min=1e-12)
        else:
            half_pi = 0.5 * math.pi
            weight = half_pi * torch.sin(half_pi * t) / (1.0 - torch.cos(half_pi * t)).clamp(min=1e-12)
        return weight.clamp(max=self.config.max_weight)

    def sample_time(self, num: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniform times in [0, 1] `(num,)`."""
        return torch.rand(num, generator=generator, device=device)

    def prior_sample(self, num_atoms: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Every atom masked `(num_atoms,)` (the t = 1 marginal; `generator` is unused, kept for a uniform API)."""
        return torch.full((num_atoms,), self.mask_index, dtype=torch.long, device=device)

    def corrupt(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask each atom independently with probability 1 - alpha(t).

        Args:
            x0: `(N,)` clean classes.
            t: `(N,)` time per atom.
            noise: Optional uniform `(N,)` in [0, 1); an atom is masked where noise < 1 - alpha(t).

        Returns:
            `x_t (N,)` (classes or mask_index) and the target `(N,)` = x0.
        """
        if self.config.fixed_composition:
            return x0, x0
        u = torch.rand(x0.shape, generator=generator, device=x0.device) if noise is None else noise
        masked = u < 1.0 - self.alpha(t)
        return torch.where(masked, torch.full_like(x0, self.mask_index), x0), x0

    def loss(self, logits: torch.Tensor, target: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Weighted cross-entropy on masked atoms, averaged over all atoms (see the module docstring).

        Args:
            logits: `(N, num_classes)` network output; target: `(N,)` classes; x_t: `(N,)`; t: `(N,)`.
        """
        if self.config.fixed_composition or target.numel() == 0:
            return logits.sum() * 0.0
        masked = (x_t == self.mask_index).to(logits.dtype)  # (N,)
        ce = F.cross_entropy(logits, target, reduction="none")  # (N,)
        weight = self.elbo_weight(t) if self.config.weighting == "elbo" else torch.ones_like(t)
        return (weight.to(logits.dtype) * masked * ce).mean()

    def posterior_probs(
        self, x_t: torch.Tensor, x0_probs: torch.Tensor, t: torch.Tensor, s: torch.Tensor
    ) -> torch.Tensor:
        """q(x_s | x_t, x_0 ~ x0_probs) over num_classes + 1 states `(N, num_classes + 1)`.

        Masked atoms: (alpha_s - alpha_t) / (1 - alpha_t) x0_probs on the classes, (1 - alpha_s) / (1 - alpha_t) on
        [MASK]. Unmasked atoms: one-hot on their class (carry-over).
        """
        alpha_t, alpha_s = self.alpha(t).unsqueeze(-1), self.alpha(s).unsqueeze(-1)  # (N, 1)
        unmask = ((alpha_s - alpha_t) / (1.0 - alpha_t).clamp(min=1e-12)).clamp(0.0, 1.0)
        masked_row = torch.cat([unmask * x0_probs, 1.0 - unmask], dim=-1)  # (N, C + 1)
        kept_row = F.one_hot(x_t.clamp(max=self.mask_index), self.num_classes + 1).to(x0_probs.dtype)
        is_masked = (x_t == self.mask_index).unsqueeze(-1)
        return torch.where(is_masked, masked_row, kept_row)

    def step(
        self,
        x_t: torch.Tensor,
        logits: torch.Tensor,
        t: torch.Tensor,
        s: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample x_s ~ q(x_s | x_t, x_0 ~ softmax(logits)) for s < t: `(N,)` classes or mask_index."""
        if self.config.fixed_composition or x_t.numel() == 0:
            return x_t
        probs = self.posterior_probs(x_t, torch.softmax(logits.float(), dim=-1), t.float(), s.float())
        sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return torch.where(x_t == self.mask_index, sampled, x_t)

    def finalize(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Replace any atom still masked (only if the last step did not reach t = 0) by the most likely class."""
        return torch.where(x == self.mask_index, logits.argmax(dim=-1), x)
