"""Wrapped-normal process: score, normalisation, forward marginal and reverse steps against the analytic density."""

from __future__ import annotations

import math

import pytest
import torch

from mmcrystal.diffusion.processes.wrapped_normal import (
    WrappedNormalProcess,
    center_per_crystal,
    wrap01,
    wrapped_normal_log_density,
    wrapped_normal_score,
)


@pytest.fixture(scope="module")
def process() -> WrappedNormalProcess:
    return WrappedNormalProcess()


def _time_of_sigma(process: WrappedNormalProcess, sigma: float) -> float:
    cfg = process.config
    return math.log(sigma / cfg.sigma_min) / math.log(cfg.sigma_max / cfg.sigma_min)


def test_schedule_endpoints(process):
    sigma = process.sigma(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(sigma, torch.tensor([0.005, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("sigma", [0.01, 0.1, 0.3, 0.5])
def test_score_is_gradient_of_log_density(sigma):
    x = torch.linspace(-0.49, 1.49, 199, dtype=torch.float64)  # several periods: the score is periodic
    h = 1e-5
    numeric = (wrapped_normal_log_density(x + h, sigma, 3) - wrapped_normal_log_density(x - h, sigma, 3)) / (2 * h)
    torch.testing.assert_close(wrapped_normal_score(x, sigma, 3), numeric, rtol=1e-5, atol=1e-5 / sigma)


def test_truncation_is_negligible():
    x = torch.linspace(-0.5, 0.5, 101, dtype=torch.float64)
    torch.testing.assert_close(wrapped_normal_score(x, 0.5, 3), wrapped_normal_score(x, 0.5, 12), rtol=0, atol=1e-9)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 0.5])
def test_forward_marginal_is_wrapped_normal(process, sigma):
    """Histogram of x_t and the first circular moment against the analytic N_w(x0, sigma^2)."""
    gen = torch.Generator().manual_seed(1)
    n = 40_000
    x0 = torch.full((n, 3), 0.8, dtype=torch.float64)  # near the cell edge, so wrapping happens
    t = torch.full((n,), _time_of_sigma(process, sigma), dtype=torch.float64)
    x_t, _ = process.corrupt(x0, t, generator=gen)
    assert float(x_t.min()) >= 0.0 and float(x_t.max()) < 1.0
    samples = x_t.flatten()
    edges = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
    empirical = torch.histc(samples, bins=40, min=0.0, max=1.0) / samples.numel()
    mids = torch.linspace(0.0, 1.0, 401, dtype=torch.float64)
    density = torch.exp(wrapped_normal_log_density(mids[:-1] + 0.00125 - 0.8, sigma, 3))
    expected = torch.stack([density[i * 10 : (i + 1) * 10].sum() / 400 for i in range(40)])  # midpoint rule
    assert torch.allclose(expected.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-6)
    stderr = (expected * (1 - expected) / samples.numel()).sqrt()
    assert float(((empirical - expected).abs() / (stderr + 1e-12)).max()) < 5.0, edges
    # E[cos 2 pi (x - x0)] = exp(-2 pi^2 sigma^2) for the wrapped normal
    circular = torch.cos(2 * math.pi * (samples - 0.8)).mean()
    assert abs(float(circular) - math.exp(-2 * math.pi**2 * sigma**2)) < 4.0 / math.sqrt(samples.numel())


def test_normalised_target_has_unit_second_moment(process):
    """The target is s / sqrt(E[s^2]) (DiffCSP normalisation): unit mean square at every t."""
    gen = torch.Generator().manual_seed(2)
    for t_value in (0.0, 0.4, 0.8, 1.0):
        x0 = torch.rand(30_000, 3, generator=gen)
        _, target = process.corrupt(x0, torch.full((30_000,), t_value), generator=gen)
        assert abs(float((target**2).mean()) - 1.0) < 0.03, t_value


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_reverse_step_with_exact_score_keeps_the_marginal(process, eta):
    """From x_t ~ N_w(x0, sigma_t^2) with the exact score, one step gives N_w(x0, sigma_s^2) (for any step size)."""
    gen = torch.Generator().manual_seed(3)
    n = 30_000
    x0 = torch.full((n, 3), 0.1, dtype=torch.float64)
    t = torch.full((n,), _time_of_sigma(process, 0.08), dtype=torch.float64)
    s = torch.full((n,), _time_of_sigma(process, 0.02), dtype=torch.float64)
    x_t, target = process.corrupt(x0, t, generator=gen)
    x_s = process.step(x_t, target, t, s, generator=gen, eta=eta)
    displacement = x_s - 0.1 - torch.round(x_s - 0.1)  # wrapped to [-1/2, 1/2)
    assert abs(float(displacement.mean())) < 3 * 0.02 / math.sqrt(3 * n)
    assert abs(float(displacement.std()) / 0.02 - 1.0) < 0.02


def test_corrector_matches_unadjusted_langevin_on_a_gaussian(process):
    """x' = x + gamma s + sqrt(2 gamma) z on N(x0, sigma^2): r = gamma / sigma^2 = step_lr / sigma_min^2 = 0.4 and
    the variance follows v' = (1 - r)^2 v + 2 r sigma^2 (stationary at sigma^2 / (1 - r / 2): the known bias of the
    unadjusted corrector, which the next predictor step contracts again)."""
    gen = torch.Generator().manual_seed(4)
    n = 30_000
    x0 = torch.full((n, 3), 0.5, dtype=torch.float64)
    t = torch.full((n,), _time_of_sigma(process, 0.05), dtype=torch.float64)
    x, target = process.corrupt(x0, t, generator=gen)
    for _ in range(5):
        score = wrapped_normal_score(x - x0, process.sigma(t).unsqueeze(-1), 3)
        x = process.correct(x, score / process.score_norm(t).sqrt().unsqueeze(-1), t, step_lr=1e-5, generator=gen)
    r, v = 0.4, 1.0
    for _ in range(5):
        v = (1 - r) ** 2 * v + 2 * r
    assert abs(float((x - 0.5).std()) / 0.05 - math.sqrt(v)) < 0.02


def test_denoise_recovers_point_mass(process):
    gen = torch.Generator().manual_seed(5)
    x0 = torch.rand(50, 3, generator=gen, dtype=torch.float64)
    t = torch.zeros(50, dtype=torch.float64)
    x_t, target = process.corrupt(x0, t, generator=gen)
    torch.testing.assert_close(process.denoise(x_t, target, t), x0, atol=1e-9, rtol=0)


def test_loss_ignores_a_global_shift_of_the_target(process):
    gen = torch.Generator().manual_seed(6)
    batch = torch.tensor([0, 0, 0, 1, 1])
    pred, target = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    shifted = target + torch.randn(2, 3, generator=gen)[batch]
    torch.testing.assert_close(process.loss(pred, shifted, batch, 2), process.loss(pred, target, batch, 2))
    assert center_per_crystal(shifted, batch, 2).abs().sum() > 0


def test_wrap01_is_half_open():
    x = torch.tensor([-1e-9, -1.0, 0.0, 1.0, 2.5, -0.25], dtype=torch.float32)
    wrapped = wrap01(x)
    assert float(wrapped.min()) >= 0.0 and float(wrapped.max()) < 1.0
    torch.testing.assert_close(wrapped[3:], torch.tensor([0.0, 0.5, 0.75]))
