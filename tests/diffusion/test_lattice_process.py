"""Lattice DDPM: parametrisation round trip and validity, forward marginal, reverse steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmcrystal.diffusion.processes.lattice import (
    LatticeConfig,
    LatticeNormalization,
    LatticeProcess,
    lengths_angles,
    volume_factor,
)


@pytest.fixture(scope="module")
def mp20_lattices(mp20_structures) -> torch.Tensor:
    return torch.tensor(np.stack([s.lattice.matrix for s in mp20_structures]), dtype=torch.float64)


def _gram(lattice: torch.Tensor) -> torch.Tensor:
    return lattice @ lattice.transpose(1, 2)


def test_round_trip_preserves_real_cells(mp20_lattices, orthogonal):
    """matrix -> params -> matrix keeps every MP-20 cell (same Gram matrix, no clamping), in any orientation."""
    process = LatticeProcess().double()
    params = process.params_from_matrix(mp20_lattices)
    rotated = process.params_from_matrix(mp20_lattices @ orthogonal(0).T)
    torch.testing.assert_close(rotated, params)  # rotation invariant parametrisation
    rebuilt = process.matrix_from_params(params)
    torch.testing.assert_close(_gram(rebuilt), _gram(mp20_lattices), rtol=1e-9, atol=1e-9)
    assert params.abs().max() < process.config.x0_clip  # real cells lie inside the x0 clip


def test_from_manifest_log_normal_moments():
    stats = {k: {"mean": 6.0, "std": 2.0} for k in "abc"}
    stats.update({k: {"mean": 88.0, "std": 20.0} for k in ("alpha", "beta", "gamma")})
    norm = LatticeNormalization.from_manifest({"normalization": {"lattice": stats}})
    var = math.log1p((2.0 / 6.0) ** 2)
    assert norm.log_length_std[0] == pytest.approx(math.sqrt(var))
    # the log-normal with these parameters has the manifest's mean length
    assert math.exp(norm.log_length_mean[1] + 0.5 * norm.log_length_std[1] ** 2) == pytest.approx(6.0)
    assert norm.angle_mean == (88.0, 88.0, 88.0) and norm.angle_std == (20.0, 20.0, 20.0)


def test_any_params_map_to_a_valid_cell():
    process = LatticeProcess().double()
    cfg = process.config
    params = 4.0 * torch.randn(4096, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lattice = process.matrix_from_params(params)
    lengths, angles = lengths_angles(lattice)
    assert bool((torch.det(lattice) > 0).all())
    assert float(lengths.min()) >= cfg.min_length - 1e-9 and float(lengths.max()) <= cfg.max_length + 1e-6
    assert float(angles.min()) >= cfg.angle_min - 1e-6 and float(angles.max()) <= cfg.angle_max + 1e-6
    assert float(volume_factor(angles).min()) >= cfg.min_volume_factor - 1e-9
    assert torch.isfinite(lattice).all()


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_forward_marginal_statistics(schedule):
    """x_t has mean sqrt(abar) x0 and variance 1 - abar, per coordinate."""
    process = LatticeProcess(LatticeConfig(schedule=schedule)).double()
    gen = torch.Generator().manual_seed(1)
    x0 = torch.tensor([[1.5, -0.5, 0.2, 2.0, -1.0, 0.0]], dtype=torch.float64).expand(40_000, 6)
    for t_value in (0.1, 0.5, 0.9):
        t = torch.full((40_000,), t_value, dtype=torch.float64)
        x_t, eps = process.corrupt(x0, t, generator=gen)
        abar = process.alpha_bar(t[:1])
        torch.testing.assert_close(x_t.mean(0), abar.sqrt() * x0[0], atol=4 * (1 / 200), rtol=0)
        torch.testing.assert_close(x_t.var(0), (1 - abar).expand(6), atol=0.03, rtol=0)
        torch.testing.assert_close(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_is_monotone_from_one_to_almost_zero(schedule):
    process = LatticeProcess(LatticeConfig(schedule=schedule)).double()
    abar = process.alpha_bar(torch.linspace(0, 1, 1001, dtype=torch.float64))
    assert float(abar[0]) == 1.0 and float(abar[-1]) < 1e-4
    assert bool((abar[1:] <= abar[:-1]).all())


def test_ddpm_step_with_exact_eps_gives_the_marginal_at_s():
    """eta = 1 (DDPM posterior) from x_t ~ q(x_t | x0) with the exact eps: x_s ~ q(x_s | x0)."""
    process = LatticeProcess().double()
    gen = torch.Generator().manual_seed(2)
    n = 40_000
    x0 = torch.tensor([[0.7, -1.2, 0.3, 0.0, 1.0, -2.0]], dtype=torch.float64).expand(n, 6)
    t, s = torch.full((n,), 0.6, dtype=torch.float64), torch.full((n,), 0.35, dtype=torch.float64)
    x_t, eps = process.corrupt(x0, t, generator=gen)
    x_s = process.step(x_t, eps, t, s, generator=gen, eta=1.0)
    abar_s = process.alpha_bar(s[:1])
    torch.testing.assert_close(x_s.mean(0), abar_s.sqrt() * x0[0], atol=0.02, rtol=0)
    torch.testing.assert_close(x_s.var(0), (1 - abar_s).expand(6), atol=0.03, rtol=0)


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_ddim_step_with_exact_prediction_is_deterministic_and_exact(prediction):
    process = LatticeProcess(LatticeConfig(prediction=prediction)).double()
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    t, s = torch.full((8,), 0.9, dtype=torch.float64), torch.full((8,), 0.2, dtype=torch.float64)
    x_t, target = process.corrupt(x0, t, generator=gen)
    eps = (x_t - process.alpha_bar(t).sqrt().unsqueeze(-1) * x0) / (1 - process.alpha_bar(t)).sqrt().unsqueeze(-1)
    x_s = process.step(x_t, target, t, s, generator=gen, eta=0.0)
    abar_s = process.alpha_bar(s).unsqueeze(-1)
    torch.testing.assert_close(x_s, abar_s.sqrt() * x0 + (1 - abar_s).sqrt() * eps)
    # the last step (s = 0) lands on x0
    final = process.step(x_t, target, t, torch.zeros(8, dtype=torch.float64), generator=gen, eta=1.0)
    torch.testing.assert_close(final, x0)


def test_lengths_scaled_with_atom_count(mp20_structures, mp20_lattices):
    """With scale_lengths_with_atoms the same standardised parameters give a cell whose volume is proportional to
    the atom count, real cells still round-trip, and their standardised log lengths keep the mean (MP-20)."""
    norm = LatticeNormalization(log_num_atoms_mean=math.log(8.0))
    process = LatticeProcess(LatticeConfig(scale_lengths_with_atoms=True), norm).double()
    params = torch.zeros(3, 6, dtype=torch.float64)
    counts = torch.tensor([1, 8, 27])
    volumes = torch.det(process.matrix_from_params(params, counts))
    torch.testing.assert_close(volumes / volumes[0], counts.double())
    plain = LatticeProcess(LatticeConfig(), norm).double()
    torch.testing.assert_close(volumes[1], torch.det(plain.matrix_from_params(params[:1]))[0])  # N = e^<log N>

    num_atoms = torch.tensor([len(s) for s in mp20_structures])
    scaled = process.params_from_matrix(mp20_lattices, num_atoms)
    rebuilt = process.matrix_from_params(scaled, num_atoms)
    torch.testing.assert_close(_gram(rebuilt), _gram(mp20_lattices), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="atom count"):
        process.params_from_matrix(mp20_lattices)


def test_from_manifest_mean_log_atom_count():
    stats = {k: {"mean": 6.0, "std": 2.0} for k in "abc"}
    stats.update({k: {"mean": 88.0, "std": 20.0} for k in ("alpha", "beta", "gamma")})
    manifest = {"normalization": {"lattice": stats}, "stats": {"train": {"num_atoms_histogram": {"2": 1, "8": 3}}}}
    norm = LatticeNormalization.from_manifest(manifest)
    assert norm.log_num_atoms_mean == pytest.approx((math.log(2) + 3 * math.log(8)) / 4)
