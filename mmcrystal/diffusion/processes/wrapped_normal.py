"""Wrapped-normal diffusion of fractional coordinates on the 3-torus with score matching (DiffCSP, Jiao et al. 2023).

Forward process (variance exploding, Song et al. 2021): x_t = (x_0 + sigma(t) eps) mod 1 with eps ~ N(0, I) and a
geometric schedule sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1] (DiffCSP: 0.005 to 0.5). The
transition density is the wrapped normal N_w(x_t | x_0, sigma^2) = sum_k N(x_t + k | x_0, sigma^2) per coordinate.

Score: d/dx log N_w = -sum_k w_k (d + k) / sigma^2, w_k = softmax_k(-(d + k)^2 / (2 sigma^2)), d = x_t - x_0 wrapped
to [-1/2, 1/2). The sum is TRUNCATED to images k in {-K..K} (`num_images`, default K = 3): every omitted image has
|d + k| >= K + 1/2, so its relative weight is at most exp(-(K + 1/2)^2 / (2 sigma^2)) <= exp(-24.5) ~ 2e-11 at
sigma = 0.5 (smaller for smaller sigma).

Loss (DiffCSP eq. 9): lambda_t ||s_theta - grad log N_w||^2 with lambda_t^-1 = E[||grad log N_w(0, sigma_t^2)||^2].
Equivalently the network predicts the NORMALISED score s / sqrt(E[s^2]) (unit scale at every t) and the loss is a
plain MSE; `to_score` undoes the normalisation at sampling time. E[s^2] per coordinate is tabulated once by
quadrature over the torus.

Translation: a global shift of all atoms of a crystal leaves the crystal unchanged, and the denoiser sees only
differences of fractional coordinates, so it cannot predict the shift component of the noise. As in DiffCSP the
network is translation invariant; here in addition (`center=True`) the per-crystal mean is removed from both the
predicted and the target score in the loss, so the unlearnable component is not fitted. Samples are therefore
defined up to a global translation, which is the same crystal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from encoders.layers.scatter import scatter_mean
from mmcrystal.config import register_config

__all__ = [
    "WrappedNormalConfig",
    "WrappedNormalProcess",
    "center_per_crystal",
    "wrap01",
    "wrapped_normal_log_density",
    "wrapped_normal_score",
]


@register_config
@dataclass
class WrappedNormalConfig:
    """Config of `WrappedNormalProcess`.

    Attributes:
        sigma_min: Noise scale at t = 0 in fractional units (DiffCSP: 0.005).
        sigma_max: Noise scale at t = 1 in fractional units (DiffCSP: 0.5; the wrapped normal density is then
            1 +- 2 exp(-2 pi^2 sigma^2) = 1 +- 0.015, close to the uniform prior).
        num_images: Truncation K of the sum over periodic images, k in {-K..K}.
        center: Remove the per-crystal mean of predicted and target scores in the loss (translation invariance).
        table_size: Points of the t grid on which E[s^2] is tabulated (interpolated linearly in log).
    """

    sigma_min: float = 0.005
    sigma_max: float = 0.5
    num_images: int = 3
    center: bool = True
    table_size: int = 513


def wrap01(x: torch.Tensor) -> torch.Tensor:
    """Map to [0, 1): x - floor(x), with the float edge case x -> 1.0 (tiny negative inputs) sent to 0."""
    wrapped = x - torch.floor(x)
    return torch.where(wrapped >= 1.0, torch.zeros_like(wrapped), wrapped)


def _shifted_and_var(displacement: torch.Tensor, sigma, num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Displacements to every image `(..., 2K+1)` and the variance broadcast to `(..., 1)`."""
    d = displacement - torch.round(displacement)  # (...) in [-1/2, 1/2]
    k = torch.arange(-num_images, num_images + 1, dtype=d.dtype, device=d.device)  # (2K+1,)
    var = torch.broadcast_to(torch.as_tensor(sigma, dtype=d.dtype, device=d.device) ** 2, d.shape)
    return d.unsqueeze(-1) + k, var.unsqueeze(-1)


def wrapped_normal_score(displacement: torch.Tensor, sigma, num_images: int) -> torch.Tensor:
    """d/dx log N_w(x | x_0, sigma^2) at displacement x - x_0 (any real; reduced mod 1 here).

    Args:
        displacement: `(...)` x - x_0 in fractional units.
        sigma: Float or tensor broadcastable to `displacement`, > 0.
        num_images: K; images k in {-K..K} are summed.

    Returns:
        Score of the same shape as `displacement`, in 1 / fractional units.
    """
    shifted, var = _shifted_and_var(displacement, sigma, num_images)  # (..., 2K+1), (..., 1)
    weights = torch.softmax(-(shifted * shifted) / (2.0 * var), dim=-1)  # posterior weight of each image
    return -(weights * shifted).sum(-1) / var.squeeze(-1)


def wrapped_normal_log_density(displacement: torch.Tensor, sigma, num_images: int) -> torch.Tensor:
    """log N_w(x | x_0, sigma^2) per coordinate at displacement x - x_0 (truncated to the same images)."""
    shifted, var = _shifted_and_var(displacement, sigma, num_images)
    log_terms = -(shifted * shifted) / (2.0 * var) - 0.5 * torch.log(2.0 * math.pi * var)
    return torch.logsumexp(log_terms, dim=-1)


def expected_squared_score(sigma: torch.Tensor, num_images: int, grid_size: int = 512) -> torch.Tensor:
    """E_{x ~ N_w(0, sigma^2)}[s(x)^2] per coordinate by midpoint quadrature.

    The integrand is integrated over [-w, w], w = min(1/2, 10 sigma): one full period, or +-10 sigma where the
    density beyond is below exp(-50). The grid spacing is then at most sigma / 25, where the midpoint rule on a
    smooth (periodic, or vanishing) integrand is accurate far below float32 precision.

    Args:
        sigma: `(S,)` noise scales (float64 recommended).

    Returns:
        `(S,)` expected squared score (~ 1 / sigma^2 for small sigma, -> 0 as the density flattens).
    """
    half_width = torch.clamp(10.0 * sigma, max=0.5).unsqueeze(-1)  # (S, 1)
    u = (torch.arange(grid_size, dtype=sigma.dtype) + 0.5) / grid_size * 2.0 - 1.0  # (G,) in (-1, 1)
    x = u * half_width  # (S, G)
    sig = sigma.unsqueeze(-1)  # (S, 1)
    density = torch.exp(wrapped_normal_log_density(x, sig, num_images))
    integrand = density * wrapped_normal_score(x, sig, num_images) ** 2
    return integrand.mean(dim=-1) * 2.0 * half_width.squeeze(-1)


def center_per_crystal(values: torch.Tensor, batch: torch.Tensor, num_crystals: int) -> torch.Tensor:
    """Subtract each crystal's mean over its atoms: `(N, 3)` -> `(N, 3)` with zero mean per crystal."""
    return values - scatter_mean(values, batch, num_crystals)[batch]


class WrappedNormalProcess(nn.Module):
    """Variance-exploding wrapped-normal diffusion of fractional coordinates `(N, 3)` in [0, 1).

    All methods take the time per ATOM, `t (N,)` in [0, 1] (the crystal's time gathered by `batch`).
    The network output `pred (N, 3)` is the normalised score (see the module docstring).

    Args:
        config: `WrappedNormalConfig`.
    """

    def __init__(self, config: WrappedNormalConfig | None = None) -> None:
        super().__init__()
        self.config = config or WrappedNormalConfig()
        grid = torch.linspace(0.0, 1.0, self.config.table_size, dtype=torch.float64)
        norms = expected_squared_score(self.sigma(grid), self.config.num_images)
        self.register_buffer("log_score_norm", torch.log(norms).float(), persistent=False)  # (table_size,)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise scale sigma(t) in fractional units, geometric from sigma_min (t = 0) to sigma_max (t = 1)."""
        cfg = self.config
        return cfg.sigma_min * (cfg.sigma_max / cfg.sigma_min) ** t

    def score_norm(self, t: torch.Tensor) -> torch.Tensor:
        """E[s^2] per coordinate at time t `(...)`, from the table (linear interpolation in log)."""
        pos = t.clamp(0.0, 1.0) * (self.config.table_size - 1)
        low = pos.floor().long().clamp(max=self.config.table_size - 2)
        frac = (pos - low).to(self.log_score_norm.dtype)
        table = self.log_score_norm
        return torch.exp(table[low] * (1 - frac) + table[low + 1] * frac).to(t.dtype)

    def sample_time(self, num: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniform times in [0, 1], one per crystal `(num,)` (DiffCSP samples its discrete steps uniformly)."""
        return torch.rand(num, generator=generator, device=device)

    def prior_sample(self, num_atoms: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniform fractional coordinates `(num_atoms, 3)` in [0, 1) (the t = 1 limit of the wrapped normal)."""
        return torch.rand(num_atoms, 3, generator=generator, device=device)

    def corrupt(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample x_t ~ N_w(x_0, sigma(t)^2).

        Args:
            x0: `(N, 3)` clean fractional coordinates (any real values).
            t: `(N,)` time per atom.
            noise: Optional standard normal `(N, 3)`; drawn from `generator` when None.

        Returns:
            `x_t (N, 3)` in [0, 1) and the regression target: the normalised score `(N, 3)`.
        """
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) if noise is None else noise
        sigma = self.sigma(t).unsqueeze(-1)  # (N, 1)
        displacement = sigma * eps  # (N, 3): computed before wrapping, exact
        score = wrapped_normal_score(displacement, sigma, self.config.num_images)
        target = score / self.score_norm(t).sqrt().unsqueeze(-1)
        return wrap01(x0 + displacement), target

    def loss(self, pred: torch.Tensor, target: torch.Tensor, batch: torch.Tensor, num_crystals: int) -> torch.Tensor:
        """Score-matching loss: mean squared error of normalised scores over atoms and axes (DiffCSP eq. 9)."""
        if self.config.center:
            pred = center_per_crystal(pred, batch, num_crystals)
            target = center_per_crystal(target, batch, num_crystals)
        return ((pred - target) ** 2).mean()

    def to_score(self, pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Network output -> score d/dx log p_t in 1 / fractional units: `(N, 3)`."""
        return pred * self.score_norm(t).sqrt().unsqueeze(-1)

    def step(
        self,
        x_t: torch.Tensor,
        pred: torch.Tensor,
        t: torch.Tensor,
        s: torch.Tensor,
        generator: torch.Generator | None = None,
        eta: float = 1.0,
    ) -> torch.Tensor:
        """One reverse step from time t to s < t.

        With x0_hat = x_t + sigma_t^2 score (Tweedie) and eps_hat = -sigma_t score, x_s = x0_hat +
        sqrt(sigma_s^2 - c^2) eps_hat + c z, c = eta sigma_s sqrt(1 - sigma_s^2 / sigma_t^2). eta = 1 is the
        ancestral (reverse-SDE) step of the VE SDE, x_s = x_t + (sigma_t^2 - sigma_s^2) score + c z (Song et al.
        2021, app. F; DiffCSP alg. 1 predictor); eta = 0 is the deterministic DDIM-like step for few-step sampling.

        Args:
            x_t: `(N, 3)` coordinates in [0, 1); pred: `(N, 3)` network output; t, s: `(N,)` times.

        Returns:
            `x_s (N, 3)` in [0, 1).
        """
        score = self.to_score(pred, t)
        sigma_t, sigma_s = self.sigma(t).unsqueeze(-1), self.sigma(s).unsqueeze(-1)  # (N, 1)
        x0_hat = x_t + sigma_t**2 * score
        eps_hat = -sigma_t * score
        c = eta * sigma_s * (1.0 - sigma_s**2 / sigma_t**2).clamp(min=0.0).sqrt()
        z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return wrap01(x0_hat + (sigma_s**2 - c**2).clamp(min=0.0).sqrt() * eps_hat + c * z)

    def correct(
        self,
        x_t: torch.Tensor,
        pred: torch.Tensor,
        t: torch.Tensor,
        step_lr: float,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One Langevin corrector step at time t: x + gamma score + sqrt(2 gamma) z (DiffCSP alg. 1 corrector).

        gamma = step_lr (sigma_t / sigma_min)^2, so gamma / sigma_t^2 = step_lr / sigma_min^2 is the same at every
        level (annealed Langevin, Song & Ermon 2019); keep it below ~1 for stability (DiffCSP: 1e-5 -> 0.4).
        """
        gamma = (step_lr * (self.sigma(t) / self.config.sigma_min) ** 2).unsqueeze(-1)  # (N, 1)
        z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return wrap01(x_t + gamma * self.to_score(pred, t) + (2.0 * gamma).sqrt() * z)

    def denoise(self, x_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Tweedie estimate x_t + sigma_t^2 score, wrapped: removes the residual sigma_min noise after the loop."""
        return wrap01(x_t + self.sigma(t).unsqueeze(-1) ** 2 * self.to_score(pred, t))
