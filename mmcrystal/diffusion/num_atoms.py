"""How many atoms to generate: a categorical head on the pooled condition, or the empirical histogram.

Conditional generation needs the atom count before the first denoising step (the state has one row per atom).
`NumAtomsPredictor` predicts p(n | condition) over n = 1..max_atoms from the pooled condition vector and is trained
with cross-entropy; train it on the same condition dropout as the denoiser, so a zero pooled vector (nothing
present) predicts the marginal. Without any condition, the training split's histogram of atom counts
(`manifest["stats"][split]["num_atoms_histogram"]`) is the prior (as CDVAE and DiffCSP sample n).

When a formula is known but not its number of formula units per cell, `restrict_to_multiples` keeps p(n) on the
multiples of the formula's size only. `draw_num_atoms` draws each count from its own seed, so a crystal's count does
not depend on which other crystals share its batch (or its rank, when sampling is distributed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from encoders.layers.mlp import MLP
from mmcrystal.config import register_config
from mmcrystal.diffusion.condition import Condition

__all__ = [
    "NumAtomsConfig",
    "NumAtomsPredictor",
    "draw_num_atoms",
    "histogram_prior",
    "restrict_to_multiples",
    "sample_num_atoms",
]


@register_config
@dataclass
class NumAtomsConfig:
    """Config of `NumAtomsPredictor`.

    Attributes:
        cond_dim: Width of the pooled condition vector.
        hidden_dim: Hidden width of the MLP.
        num_layers: Linear layers of the MLP.
        max_atoms: Largest atom count; classes are n = 1..max_atoms.
    """

    cond_dim: int = 256
    hidden_dim: int = 256
    num_layers: int = 3
    max_atoms: int = 64


class NumAtomsPredictor(nn.Module):
    """Logits over n = 1..max_atoms from a pooled condition `(B, cond_dim)`; logit k is n = k + 1.

    Args:
        config: `NumAtomsConfig`.
    """

    def __init__(self, config: NumAtomsConfig | None = None) -> None:
        super().__init__()
        self.config = config or NumAtomsConfig()
        cfg = self.config
        self.mlp = MLP(cfg.cond_dim, cfg.hidden_dim, cfg.max_atoms, num_layers=cfg.num_layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        # pooled (B, cond_dim) -> logits (B, max_atoms)
        return self.mlp(pooled)

    def loss(self, logits: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against the true counts `(B,)`; counts above max_atoms raise (raise max_atoms)."""
        if num_atoms.numel() and (num_atoms.min() < 1 or num_atoms.max() > self.config.max_atoms):
            raise ValueError(f"atom counts must lie in 1..{self.config.max_atoms}")
        return F.cross_entropy(logits, num_atoms.long() - 1)

    def probs(self, cond: Condition | None, histogram: torch.Tensor | None = None) -> torch.Tensor:
        """p(n) `(B, max_atoms)` for each sample of `cond`; with `cond=None`, the histogram prior `(1, max_atoms)`."""
        if cond is None:
            if histogram is None:
                raise ValueError("without a condition, pass the histogram prior (see `histogram_prior`)")
            return histogram.reshape(1, -1)
        return torch.softmax(self(cond.pooled().to(self.mlp[0].weight.dtype)), dim=-1)


def histogram_prior(histogram: Mapping[str | int, int | float], max_atoms: int) -> torch.Tensor:
    """Normalised `(max_atoms,)` probabilities of n = 1..max_atoms from a manifest histogram {"n": count}.

    Counts above max_atoms are dropped (and raise if nothing is left).
    """
    probs = torch.zeros(max_atoms, dtype=torch.float64)
    for n, count in histogram.items():
        n = int(n)
        if 1 <= n <= max_atoms:
            probs[n - 1] += float(count)
    if probs.sum() <= 0:
        raise ValueError("the atom-count histogram has no counts in 1..max_atoms")
    return (probs / probs.sum()).float()


def sample_num_atoms(
    probs: torch.Tensor, num_samples: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw atom counts from `probs (B, max_atoms)` (one per row) or `(max_atoms,)` (`num_samples` draws).

    Returns:
        `(B,)` or `(num_samples,)` long counts in 1..max_atoms.
    """
    if probs.dim() == 1 or probs.shape[0] == 1:
        if num_samples is None:
            raise ValueError("num_samples is needed with a single distribution")
        draws = torch.multinomial(probs.reshape(-1), num_samples, replacement=True, generator=generator)
    else:
        draws = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return draws + 1


def restrict_to_multiples(probs: torch.Tensor, unit: int) -> torch.Tensor:
    """p(n) `(max_atoms,)` over n = 1..max_atoms conditioned on n being a multiple of `unit`.

    When the distribution puts (numerically) no mass on any multiple, the multiples are taken as equally likely.

    Raises:
        ValueError: if `unit` exceeds max_atoms (no multiple fits).
    """
    max_atoms = probs.shape[-1]
    if unit < 1 or unit > max_atoms:
        raise ValueError(f"a formula unit of {unit} atoms does not fit in the model's max_atoms={max_atoms}")
    n = torch.arange(1, max_atoms + 1, device=probs.device)
    keep = (n % unit == 0).to(torch.float64)  # (max_atoms,)
    restricted = probs.detach().reshape(-1).to(torch.float64) * keep
    total = float(restricted.sum())
    return (restricted / total if total > 0 else keep / keep.sum()).float()


def draw_num_atoms(probs: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """One atom count per seed from `probs (max_atoms,)`, each from its own `torch.Generator` -> `(len(seeds),)` long."""
    weights = probs.detach().reshape(-1).cpu().to(torch.float64)
    draws = [torch.multinomial(weights, 1, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return (torch.cat(draws) + 1) if draws else torch.zeros(0, dtype=torch.long)
