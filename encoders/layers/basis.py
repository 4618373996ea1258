"""Feature expansions of scalars: radial bases of distances (Å), a smooth cutoff, periodic Fourier features."""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianRBF(nn.Module):
    """Gaussians on an even grid of centres in [0, cutoff] (SchNet, Schütt et al. 2018, eq. 7).

    exp(-(d - mu_k)^2 / (2 * delta^2)) with delta the grid spacing.

    Args:
        num_basis: Number of centres K.
        cutoff: Largest centre in Å.
    """

    def __init__(self, num_basis: int, cutoff: float) -> None:
        super().__init__()
        centers = torch.linspace(0.0, cutoff, num_basis)
        self.register_buffer("centers", centers, persistent=False)
        spacing = cutoff / max(num_basis - 1, 1)
        self.coeff = -0.5 / spacing**2

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        # distances (E,) Å -> (E, K)
        return torch.exp(self.coeff * (distances.unsqueeze(-1) - self.centers) ** 2)


class BesselRBF(nn.Module):
    """Spherical Bessel radial basis of order 0 (DimeNet, Gasteiger et al. 2020, eq. 7).

    sqrt(2 / c) * sin(k * pi * d / c) / d for k = 1..K; it vanishes at d = c for every k.

    Args:
        num_basis: Number of frequencies K.
        cutoff: Cutoff radius c in Å.
    """

    def __init__(self, num_basis: int, cutoff: float) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.arange(1, num_basis + 1) * math.pi / cutoff, persistent=False)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        # distances (E,) Å -> (E, K); clamp keeps coincident atoms finite (limit is k*pi/c)
        d = distances.clamp(min=1e-6).unsqueeze(-1)
        return self.prefactor * torch.sin(self.freqs * d) / d


def cosine_cutoff(distances: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Smooth envelope 0.5 * (cos(pi d / c) + 1) for d < c, else 0 (Behler & Parrinello 2007).

    Messages fade to zero at the cutoff, so an edge entering or leaving the graph changes nothing abruptly.
    """
    envelope = 0.5 * (torch.cos(distances * (math.pi / cutoff)) + 1.0)
    return envelope * (distances < cutoff).to(distances.dtype)


class FourierFeatures(nn.Module):
    """Sinusoidal features of periodic inputs: [sin(2 pi k x), cos(2 pi k x)] for k = 1..K.

    Used on fractional-coordinate differences as in DiffCSP (Jiao et al. 2023, eq. 5); each feature has period
    1 in x, so the result does not depend on which periodic image of an atom is used.

    Args:
        num_freqs: Number of frequencies K.
    """

    def __init__(self, num_freqs: int) -> None:
        super().__init__()
        self.num_freqs = num_freqs
        self.register_buffer("freqs", torch.arange(1, num_freqs + 1, dtype=torch.float32), persistent=False)

    @property
    def output_dim_per_input(self) -> int:
        """Features produced per input scalar (2K)."""
        return 2 * self.num_freqs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (..., C) -> (..., C * 2K). Reducing k * x mod 1 before scaling by 2 pi makes x and x + n give the
        # same angle up to the rounding of the addition, in any precision.
        phase = torch.remainder(x.unsqueeze(-1) * self.freqs.to(x.dtype), 1.0)  # (..., C, K) turns
        angles = 2.0 * math.pi * phase
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-2)
