"""Symmetries of `CrystalDenoiser` on noisy real MP-20 crystals (float64, so tolerances can be tight)."""

from __future__ import annotations

import pytest
import torch

from mmcrystal.diffusion import Condition, CrystalDenoiser, DenoiserConfig, JointDiffusion

TOL = dict(rtol=1e-7, atol=1e-8)
COND_DIM = 8


@pytest.fixture(scope="module", params=[0, 8], ids=["fourier", "fourier+distance"])
def denoiser(request) -> CrystalDenoiser:
    """Both edge-feature sets: Fourier features of f_j - f_i alone, and with Gaussians of the minimum-image distance."""
    torch.manual_seed(0)
    cfg = DenoiserConfig(
        hidden_dim=32,
        num_layers=2,
        num_freqs=4,
        time_dim=16,
        cond_dim=COND_DIM,
        num_heads=2,
        distance_rbf=request.param,
    )
    model = CrystalDenoiser(cfg).double().eval()
    with torch.no_grad():  # FiLM starts as the identity; give it weight so the test exercises it
        for block in model.blocks:
            block.film.weight.normal_(std=0.05)
    return model


@pytest.fixture(scope="module")
def noisy_and_cond(mp20_structures, to_batch):
    batch = to_batch(mp20_structures[:6], dtype=torch.float64)
    diffusion = JointDiffusion().double()
    gen = torch.Generator().manual_seed(1)
    t = diffusion.sample_time(6, gen).double()
    noisy, _ = diffusion.corrupt(batch, t, gen)
    tokens = torch.randn(6, 3, COND_DIM, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    cond = Condition.from_parts({"text": (tokens[:, :2], mask[:, :2]), "xrd": (tokens[:, 2:], mask[:, 2:])})
    return noisy, t, cond


def _run(model, noisy, t, cond):
    with torch.no_grad():
        return model(noisy, t, cond)


def test_output_shapes_and_centred_scores(denoiser, noisy_and_cond):
    noisy, t, cond = noisy_and_cond
    out = _run(denoiser, noisy, t, cond)
    n, b = noisy.frac_coords.shape[0], noisy.num_crystals
    assert out.coords.shape == (n, 3) and out.lattice.shape == (b, 6) and out.types.shape == (n, 100)
    means = torch.zeros(b, 3, dtype=out.coords.dtype).index_add_(0, noisy.batch, out.coords)
    torch.testing.assert_close(means, torch.zeros_like(means), atol=1e-12, rtol=0)


def test_permutation_equivariance(denoiser, noisy_and_cond, atom_permutation):
    noisy, t, cond = noisy_and_cond
    perm = atom_permutation(noisy.batch, seed=2)
    moved = noisy.replace(types=noisy.types[perm], frac_coords=noisy.frac_coords[perm])
    base, out = _run(denoiser, noisy, t, cond), _run(denoiser, moved, t, cond)
    torch.testing.assert_close(out.coords, base.coords[perm], **TOL)
    torch.testing.assert_close(out.types, base.types[perm], **TOL)
    torch.testing.assert_close(out.lattice, base.lattice, **TOL)


def test_rotation_invariance(denoiser, noisy_and_cond, orthogonal):
    noisy, t, cond = noisy_and_cond
    rotated = noisy.replace(lattice=noisy.lattice @ orthogonal(3).T)  # rows a -> R a, fractional coords unchanged
    base, out = _run(denoiser, noisy, t, cond), _run(denoiser, rotated, t, cond)
    for name in ("coords", "lattice", "types"):
        torch.testing.assert_close(getattr(out, name), getattr(base, name), **TOL)


def test_translation_and_periodic_image_invariance(denoiser, noisy_and_cond):
    noisy, t, cond = noisy_and_cond
    gen = torch.Generator().manual_seed(4)
    shift = torch.rand(noisy.num_crystals, 3, generator=gen, dtype=torch.float64)[noisy.batch]
    images = torch.randint(-2, 3, noisy.frac_coords.shape, generator=gen).double()
    moved = noisy.replace(frac_coords=(noisy.frac_coords + shift) % 1.0 + images)
    base, out = _run(denoiser, noisy, t, cond), _run(denoiser, moved, t, cond)
    for name in ("coords", "lattice", "types"):
        torch.testing.assert_close(getattr(out, name), getattr(base, name), rtol=1e-6, atol=1e-7)


def test_crystals_do_not_interact(denoiser, noisy_and_cond):
    """A crystal's outputs do not depend on the other crystals of the batch (padding is masked)."""
    noisy, t, cond = noisy_and_cond
    first = noisy.batch == 3
    alone = noisy.replace(
        types=noisy.types[first],
        frac_coords=noisy.frac_coords[first],
        lattice_params=noisy.lattice_params[3:4],
        lattice=noisy.lattice[3:4],
        num_atoms=noisy.num_atoms[3:4],
        batch=torch.zeros(int(first.sum()), dtype=torch.long),
    )
    base, out = _run(denoiser, noisy, t, cond), _run(denoiser, alone, t[3:4], cond.select(slice(3, 4)))
    torch.testing.assert_close(out.coords, base.coords[first], **TOL)
    torch.testing.assert_close(out.lattice, base.lattice[3:4], **TOL)


def test_condition_and_time_change_the_output(denoiser, noisy_and_cond):
    """Invariance is not constancy: the condition tokens, their mask and the time all matter."""
    noisy, t, cond = noisy_and_cond
    base = _run(denoiser, noisy, t, cond)
    uncond = _run(denoiser, noisy, t, cond.empty())
    none = _run(denoiser, noisy, t, None)
    torch.testing.assert_close(uncond.coords, none.coords, **TOL)  # all masked == no condition
    conditioned = noisy.batch != 2  # crystal 2 has no condition token
    assert (base.coords[conditioned] - uncond.coords[conditioned]).abs().max() > 1e-6
    torch.testing.assert_close(base.coords[~conditioned], uncond.coords[~conditioned], **TOL)
    later = _run(denoiser, noisy, (t + 0.3).clamp(max=1.0), cond)
    assert (later.lattice - base.lattice).abs().max() > 1e-6


@pytest.mark.parametrize("bad", [dict(distance_rbf=-1), dict(distance_rbf=8, distance_cutoff=0.0)])
def test_distance_features_refuse_bad_settings(bad):
    with pytest.raises(ValueError, match="distance_rbf"):
        CrystalDenoiser(DenoiserConfig(hidden_dim=16, num_layers=1, num_heads=2, **bad))
