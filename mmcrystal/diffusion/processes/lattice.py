"""DDPM over a rotation-invariant lattice parametrisation: normalised log lengths and angles.

Choice and why. A lattice `L (3, 3)` (rows a, b, c in Å) is described by 6 numbers, (log a, log b, log c, alpha,
beta, gamma), each standardised with dataset statistics. This parametrisation
  - is rotation invariant by construction (it is a function of the Gram matrix L L^T), so the loss and the samples
    do not depend on the Cartesian frame and the network needs no equivariant lattice head;
  - keeps lengths positive for any real vector (exp), and makes multiplicative length noise scale-free;
  - is what the manifest already summarises (`manifest["normalization"]["lattice"]`: mean/std of a, b, c in Å and
    alpha, beta, gamma in degrees).
Cell size and atom count (`LatticeConfig.scale_lengths_with_atoms`). The volume of a cell grows with its number of
atoms N (MP-20: std of log V is 0.63, of log V / N 0.38), so a prior and a standardisation that ignore N make the
network learn the whole size shift. With the option on, every log length is shifted by (log N - <log N>) / 3 before
standardising, where <log N> is the training set's mean log atom count: the prior's cell volume then grows with N
(as CDVAE's length scaling and MatterGen's atom-count-dependent lattice prior do), and the standardised parameters
keep their mean. The standard deviations stay those of the unshifted log lengths (slightly wider than needed).

It is not invariant to the choice of cell (a supercell or another basis of the same lattice is a different
point), the same limitation as DiffCSP's lattice matrix; MatterGen's symmetric-matrix (polar decomposition)
parametrisation would avoid degenerate angle regions but needs its own statistics the manifest does not hold.

Noise: DDPM (Ho et al. 2020) in continuous time, x_t = sqrt(abar(t)) x_0 + sqrt(1 - abar(t)) eps, with the cosine
schedule (Nichol & Dhariwal 2021) or the linear beta schedule of DDPM expressed in continuous time. The network
predicts eps (default, as DiffCSP does for its lattice) or x_0. Reverse steps use the DDIM family (Song, Meng &
Ermon 2021): eta = 1 is the DDPM ancestral posterior q(x_s | x_t, x0_hat), eta = 0 the deterministic DDIM step.

Validity. `matrix_from_params` always returns a cell with positive volume: lengths are clamped to
[min_length, max_length] Å, angles to [angle_min, angle_max] degrees, and if the volume factor
V / (abc) = sqrt(1 - cos^2 alpha - cos^2 beta - cos^2 gamma + 2 cos alpha cos beta cos gamma) is still below
`min_volume_factor` the three angles are pulled linearly towards 90 degrees (the largest of 0.95, 0.9, ..., 0 of
their deviation that passes; 0, a rectangular cell, always does). Real MP-20 cells (angles 11-169 degrees) pass
untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mmcrystal.config import register_config

__all__ = [
    "LatticeConfig",
    "LatticeNormalization",
    "LatticeProcess",
    "lattice_from_lengths_angles",
    "lengths_angles",
    "volume_factor",
]


@register_config
@dataclass
class LatticeNormalization:
    """Standardisation of the 6 lattice parameters (defaults: 1,500 MP-20 training cells).

    Attributes:
        log_length_mean: Mean of log(a / Å), log(b / Å), log(c / Å).
        log_length_std: Standard deviation of the log lengths.
        angle_mean: Mean of alpha, beta, gamma in degrees.
        angle_std: Standard deviation of the angles in degrees.
        log_num_atoms_mean: Mean of log N over the training crystals (used by `scale_lengths_with_atoms`).
    """

    log_length_mean: tuple[float, float, float] = (1.73, 1.78, 1.94)
    log_length_std: tuple[float, float, float] = (0.30, 0.29, 0.40)
    angle_mean: tuple[float, float, float] = (85.0, 85.3, 84.6)
    angle_std: tuple[float, float, float] = (24.9, 23.6, 29.1)
    log_num_atoms_mean: float = 2.3

    @classmethod
    def from_manifest(cls, manifest: dict) -> LatticeNormalization:
        """From `manifest["normalization"]["lattice"]` (mean/std of a, b, c in Å and angles in degrees).

        The manifest holds moments of the lengths, not of their logs; a log-normal with the same mean m and
        standard deviation s has log-mean log(m) - v / 2 and log-variance v = log(1 + s^2 / m^2).
        """
        stats = manifest["normalization"]["lattice"]
        log_means, log_stds = [], []
        for key in ("a", "b", "c"):
            mean, std = float(stats[key]["mean"]), float(stats[key]["std"])
            var = math.log1p((std / mean) ** 2)
            log_means.append(math.log(mean) - 0.5 * var)
            log_stds.append(max(math.sqrt(var), 1e-3))
        angles = [stats[k] for k in ("alpha", "beta", "gamma")]
        reference = manifest["normalization"].get("reference_split") or "train"
        histogram = manifest.get("stats", {}).get(reference, {}).get("num_atoms_histogram") or {}
        total = sum(int(c) for c in histogram.values())
        log_n = (
            sum(int(c) * math.log(int(n)) for n, c in histogram.items()) / total if total else cls.log_num_atoms_mean
        )
        return cls(
            log_length_mean=tuple(log_means),
            log_length_std=tuple(log_stds),
            angle_mean=tuple(float(a["mean"]) for a in angles),
            angle_std=tuple(max(float(a["std"]), 1e-3) for a in angles),
            log_num_atoms_mean=float(log_n),
        )


@register_config
@dataclass
class LatticeConfig:
    """Config of `LatticeProcess`.

    Attributes:
        schedule: "cosine" (Nichol & Dhariwal 2021, offset `cosine_s`) or "linear" (DDPM betas `beta_start` to
            `beta_end` over 1,000 steps, in continuous time).
        prediction: What the network predicts: "epsilon" (the noise) or "x0" (the clean normalised parameters).
        cosine_s: Offset s of the cosine schedule.
        beta_start: First beta of the linear schedule.
        beta_end: Last beta of the linear schedule.
        alpha_bar_min: Floor of abar(t), so x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) stays finite at t = 1.
        x0_clip: Clip predicted x_0 to [-x0_clip, x0_clip] (standardised units) during sampling.
        min_length: Shortest lattice vector in Å after mapping back.
        max_length: Longest lattice vector in Å after mapping back.
        angle_min: Smallest angle in degrees after mapping back.
        angle_max: Largest angle in degrees after mapping back.
        min_volume_factor: Smallest V / (abc) allowed after mapping back (see the module docstring).
        scale_lengths_with_atoms: Shift log lengths by (log N - <log N>) / 3 before standardising, so that the
            prior's cell volume grows with the atom count N (see the module docstring). Off in older models.
    """

    schedule: Literal["cosine", "linear"] = "cosine"
    prediction: Literal["epsilon", "x0"] = "epsilon"
    cosine_s: float = 0.008
    beta_start: float = 1e-4
    beta_end: float = 0.02
    alpha_bar_min: float = 1e-5
    x0_clip: float = 6.0
    min_length: float = 1.0
    max_length: float = 100.0
    angle_min: float = 5.0
    angle_max: float = 175.0
    min_volume_factor: float = 0.02
    scale_lengths_with_atoms: bool = False


def lengths_angles(lattice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lattice rows `(B, 3, 3)` Å -> lengths `(B, 3)` Å and angles (alpha, beta, gamma) `(B, 3)` degrees."""
    lengths = lattice.norm(dim=-1)
    a, b, c = lattice.unbind(dim=1)  # (B, 3) each
    pairs = ((b, c, 1, 2), (a, c, 0, 2), (a, b, 0, 1))  # alpha = angle(b, c), beta = angle(a, c), gamma = angle(a, b)
    cosines = [(u * v).sum(-1) / (lengths[:, i] * lengths[:, j]) for u, v, i, j in pairs]
    angles = torch.rad2deg(torch.arccos(torch.stack(cosines, dim=-1).clamp(-1.0, 1.0)))
    return lengths, angles


def volume_factor(angles: torch.Tensor) -> torch.Tensor:
    """V / (abc) for angles `(..., 3)` in degrees; NaN-free, 0 where the angles admit no cell."""
    cos = torch.cos(torch.deg2rad(angles))
    ca, cb, cg = cos.unbind(-1)
    return (1.0 - ca**2 - cb**2 - cg**2 + 2.0 * ca * cb * cg).clamp(min=0.0).sqrt()


def lattice_from_lengths_angles(lengths: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Lengths `(B, 3)` Å and angles `(B, 3)` degrees -> lattice rows `(B, 3, 3)` Å in a fixed orientation.

    Same convention as pymatgen's `Lattice.from_parameters` (c along z, a in the xz plane); valid whenever
    `volume_factor(angles) > 0`.
    """
    alpha, beta, gamma = torch.deg2rad(angles).unbind(-1)
    cos_gamma_star = (torch.cos(alpha) * torch.cos(beta) - torch.cos(gamma)) / (torch.sin(alpha) * torch.sin(beta))
    gamma_star = torch.arccos(cos_gamma_star.clamp(-1.0, 1.0))
    zero = torch.zeros_like(alpha)
    a_vec = torch.stack([torch.sin(beta), zero, torch.cos(beta)], dim=-1)
    b_vec = torch.stack(
        [-torch.sin(alpha) * torch.cos(gamma_star), torch.sin(alpha) * torch.sin(gamma_star), torch.cos(alpha)], dim=-1
    )
    c_vec = torch.stack([zero, zero, torch.ones_like(alpha)], dim=-1)
    return torch.stack([a_vec, b_vec, c_vec], dim=1) * lengths.unsqueeze(-1)  # (B, 3, 3)


class LatticeProcess(nn.Module):
    """DDPM over standardised (log a, log b, log c, alpha, beta, gamma) `(B, 6)`; times `t (B,)` in [0, 1].

    Args:
        config: `LatticeConfig`.
        normalization: `LatticeNormalization`, usually `LatticeNormalization.from_manifest(manifest)`.
    """

    dim = 6

    def __init__(self, config: LatticeConfig | None = None, normalization: LatticeNormalization | None = None) -> None:
        super().__init__()
        self.config = config or LatticeConfig()
        self.normalization = normalization or LatticeNormalization()
        norm = self.normalization
        self.register_buffer("mean", torch.tensor([*norm.log_length_mean, *norm.angle_mean]), persistent=False)
        self.register_buffer("std", torch.tensor([*norm.log_length_std, *norm.angle_std]), persistent=False)

    # --- parametrisation -------------------------------------------------------------------------------------
    def _length_shift(self, num_atoms: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | float:
        """(log N - <log N>) / 3 `(B, 1)` when lengths scale with the atom count, else 0."""
        if not self.config.scale_lengths_with_atoms:
            return 0.0
        if num_atoms is None:
            raise ValueError("LatticeConfig.scale_lengths_with_atoms needs the atom count of every crystal")
        log_n = torch.log(num_atoms.to(device=like.device, dtype=like.dtype).clamp(min=1))
        return ((log_n - self.normalization.log_num_atoms_mean) / 3.0).unsqueeze(-1)

    def params_from_matrix(self, lattice: torch.Tensor, num_atoms: torch.Tensor | None = None) -> torch.Tensor:
        """Lattice rows `(B, 3, 3)` Å (and atom counts `(B,)`) -> standardised parameters `(B, 6)` (rotation
        invariant)."""
        lengths, angles = lengths_angles(lattice)
        raw = torch.cat([torch.log(lengths) - self._length_shift(num_atoms, lengths), angles], dim=-1)
        return (raw - self.mean.to(raw.dtype)) / self.std.to(raw.dtype)

    def lengths_angles_from_params(
        self, params: torch.Tensor, num_atoms: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised `(B, 6)` (and atom counts `(B,)`) -> lengths `(B, 3)` Å and angles `(B, 3)` degrees,
        clamped to a valid cell."""
        cfg = self.config
        raw = params * self.std.to(params.dtype) + self.mean.to(params.dtype)
        log_lengths = raw[:, :3] + self._length_shift(num_atoms, raw)
        lengths = torch.exp(log_lengths).clamp(cfg.min_length, cfg.max_length)
        angles = raw[:, 3:].clamp(cfg.angle_min, cfg.angle_max)
        # shrink deviations from 90 degrees by the largest factor that gives volume_factor >= min_volume_factor
        factors = torch.linspace(1.0, 0.0, 21, dtype=angles.dtype, device=angles.device)  # (F,)
        candidates = 90.0 + factors.view(-1, 1, 1) * (angles - 90.0)  # (F, B, 3)
        ok = volume_factor(candidates) >= cfg.min_volume_factor  # (F, B); the last (90, 90, 90) always passes
        first_ok = torch.argmax(ok.to(torch.int8), dim=0)  # (B,) first True from factor 1 downwards
        angles = candidates[first_ok, torch.arange(angles.shape[0], device=angles.device)]
        return lengths, angles

    def matrix_from_params(self, params: torch.Tensor, num_atoms: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised `(B, 6)` (and atom counts `(B,)`) -> lattice rows `(B, 3, 3)` Å with positive volume."""
        return lattice_from_lengths_angles(*self.lengths_angles_from_params(params, num_atoms))

    # --- schedule ---------------------------------------------------------------------------------------------
    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """abar(t) `(B,)`: 1 at t = 0, decreasing to about alpha_bar_min at t = 1."""
        cfg = self.config
        if cfg.schedule == "cosine":
            f = torch.cos((t + cfg.cosine_s) / (1.0 + cfg.cosine_s) * math.pi / 2) ** 2
            abar = f / math.cos(cfg.cosine_s / (1.0 + cfg.cosine_s) * math.pi / 2) ** 2
        elif cfg.schedule == "linear":
            # prod_{i <= 1000 t} (1 - beta_i) ~ exp(-1000 (beta_0 t + (beta_1 - beta_0) t^2 / 2))
            abar = torch.exp(-1000.0 * (cfg.beta_start * t + 0.5 * (cfg.beta_end - cfg.beta_start) * t * t))
        else:
            raise ValueError(f"unknown lattice schedule {cfg.schedule!r}")
        return torch.where(t <= 0, torch.ones_like(abar), abar.clamp(cfg.alpha_bar_min, 1.0))

    def sample_time(self, num: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniform times in [0, 1] `(num,)`."""
        return torch.rand(num, generator=generator, device=device)

    def prior_sample(self, num: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Standard normal standardised parameters `(num, 6)`."""
        return torch.randn(num, self.dim, generator=generator, device=device)

    # --- training ---------------------------------------------------------------------------------------------
    def corrupt(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps for standardised `x0 (B, 6)`, `t (B,)`.

        Returns:
            `x_t (B, 6)` and the target `(B, 6)`: eps or x_0 according to `config.prediction`.
        """
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) if noise is None else noise
        abar = self.alpha_bar(t).unsqueeze(-1)  # (B, 1)
        x_t = abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps
        return x_t, (eps if self.config.prediction == "epsilon" else x0)

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error over crystals and the 6 parameters (DDPM's simple loss)."""
        return ((pred - target) ** 2).mean()

    # --- sampling ---------------------------------------------------------------------------------------------
    def predict_x0_eps(
        self, x_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output -> (x0_hat clipped to +-x0_clip, eps_hat consistent with it), both `(B, 6)`."""
        abar = self.alpha_bar(t).unsqueeze(-1)
        if self.config.prediction == "epsilon":
            x0 = (x_t - (1.0 - abar).sqrt() * pred) / abar.sqrt()
        else:
            x0 = pred
        x0 = x0.clamp(-self.config.x0_clip, self.config.x0_clip)
        eps = (x_t - abar.sqrt() * x0) / (1.0 - abar).clamp(min=1e-12).sqrt()
        return x0, eps

    def step(
        self,
        x_t: torch.Tensor,
        pred: torch.Tensor,
        t: torch.Tensor,
        s: torch.Tensor,
        generator: torch.Generator | None = None,
        eta: float = 1.0,
    ) -> torch.Tensor:
        """One reverse step t -> s < t (DDIM, Song et al. 2021, eq. 12; eta = 1 is the DDPM posterior).

        x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - c^2) eps_hat + c z,
        c^2 = eta^2 (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s).
        """
        x0, eps = self.predict_x0_eps(x_t, pred, t)
        abar_t, abar_s = self.alpha_bar(t).unsqueeze(-1), self.alpha_bar(s).unsqueeze(-1)
        c2 = eta**2 * (1.0 - abar_s) / (1.0 - abar_t).clamp(min=1e-12) * (1.0 - abar_t / abar_s)
        c2 = c2.clamp(min=0.0)
        z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return abar_s.sqrt() * x0 + (1.0 - abar_s - c2).clamp(min=0.0).sqrt() * eps + c2.sqrt() * z
