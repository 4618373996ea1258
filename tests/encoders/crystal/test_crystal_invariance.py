"""Symmetries of the crystal encoders on real MP-20 structures (float64 so tolerances can be tight)."""

from __future__ import annotations

import pytest
import torch

from encoders import CrystalGraphInput, CSPNetConfig, RadiusGraphConfig, build_encoder

CONFIGS = {
    "cspnet": CSPNetConfig(hidden_dim=32, num_layers=2, num_freqs=8, pool="attention"),
    "radius": RadiusGraphConfig(hidden_dim=32, num_layers=2, cutoff=5.0, num_radial=16, pool="attention"),
}
TOL = dict(rtol=1e-7, atol=1e-8)


@pytest.fixture(scope="module", params=list(CONFIGS))
def encoder(request):
    torch.manual_seed(0)
    return build_encoder(CONFIGS[request.param]).double().eval()


@pytest.fixture(scope="module")
def crystals(mp20_structures, to_crystal_input) -> CrystalGraphInput:
    return to_crystal_input(mp20_structures[:16])


def _encode(encoder, crystals):
    with torch.no_grad():
        return encoder(crystals)


def _replace(crystals: CrystalGraphInput, **fields) -> CrystalGraphInput:
    values = {name: getattr(crystals, name) for name in CrystalGraphInput.__dataclass_fields__}
    return CrystalGraphInput(**{**values, **fields})


def random_orthogonal(seed: int) -> torch.Tensor:
    """A random 3x3 orthogonal matrix with determinant -1 (rotation and reflection at once)."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) < 0 else -q


def test_rotation_and_reflection_invariance(encoder, crystals):
    rot = random_orthogonal(1)
    rotated = _replace(crystals, lattice=crystals.lattice @ rot.T)  # rows a -> R a; frac coords unchanged
    base, moved = _encode(encoder, crystals), _encode(encoder, rotated)
    torch.testing.assert_close(moved.pooled, base.pooled, **TOL)
    torch.testing.assert_close(moved.tokens, base.tokens, **TOL)


def test_translation_invariance(encoder, crystals):
    shift = torch.rand(crystals.num_atoms.numel(), 3, dtype=torch.float64)[crystals.batch]  # one per crystal
    moved = _encode(encoder, _replace(crystals, frac_coords=(crystals.frac_coords + shift) % 1.0))
    torch.testing.assert_close(moved.pooled, _encode(encoder, crystals).pooled, **TOL)


def test_periodic_image_choice_invariance(encoder, crystals):
    images = torch.randint(-2, 3, crystals.frac_coords.shape).to(torch.float64)  # f -> f + n, same site
    moved = _encode(encoder, _replace(crystals, frac_coords=crystals.frac_coords + images))
    torch.testing.assert_close(moved.pooled, _encode(encoder, crystals).pooled, **TOL)


def test_permutation_invariance(encoder, crystals):
    # shuffle atoms within each crystal; `batch` stays sorted
    perm = torch.argsort(crystals.batch.to(torch.float64) + 0.5 * torch.rand(crystals.batch.numel()))
    permuted = _replace(crystals, atomic_numbers=crystals.atomic_numbers[perm], frac_coords=crystals.frac_coords[perm])
    base, moved = _encode(encoder, crystals), _encode(encoder, permuted)
    torch.testing.assert_close(moved.pooled, base.pooled, **TOL)
    torch.testing.assert_close(moved.tokens[moved.mask], base.tokens[base.mask][perm], **TOL)  # equivariant


def test_outputs_respond_to_geometry(encoder, crystals):
    """Invariance is not constancy: straining the cell or moving one atom changes the pooled vector."""
    base = _encode(encoder, crystals).pooled
    strain = torch.eye(3, dtype=torch.float64) + 0.05 * torch.tensor([[1.0, 0.3, 0.0], [0.0, -0.5, 0.2], [0, 0, 0]])
    strained = _encode(encoder, _replace(crystals, lattice=crystals.lattice @ strain)).pooled
    assert (strained - base).abs().amax(dim=1).min() > 1e-6
    frac = crystals.frac_coords.clone()
    frac[0] += torch.tensor([0.05, -0.03, 0.02], dtype=torch.float64)
    moved = _encode(encoder, _replace(crystals, frac_coords=frac)).pooled
    assert (moved[0] - base[0]).abs().max() > 1e-6
    torch.testing.assert_close(moved[1:], base[1:], **TOL)  # other crystals untouched


@pytest.mark.parametrize("scaling", [[[2, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 1, 0], [0, 1, 0], [0, 0, 2]]])
def test_radius_encoder_supercell_invariance(mp20_structures, to_crystal_input, scaling):
    torch.manual_seed(0)
    encoder = build_encoder(CONFIGS["radius"]).double().eval()
    structures = mp20_structures[:8]
    supercells = [s.copy().make_supercell(scaling) for s in structures]
    base = _encode(encoder, to_crystal_input(structures)).pooled
    bigger = _encode(encoder, to_crystal_input(supercells)).pooled
    torch.testing.assert_close(bigger, base, rtol=1e-6, atol=1e-7)


def test_cspnet_is_not_supercell_invariant(mp20_structures, to_crystal_input):
    """Documented limitation: fractional features depend on the cell, so a 2x1x1 supercell changes the output."""
    torch.manual_seed(0)
    encoder = build_encoder(CONFIGS["cspnet"]).double().eval()
    structures = mp20_structures[:4]
    supercells = [s.copy().make_supercell([2, 1, 1]) for s in structures]
    base = _encode(encoder, to_crystal_input(structures)).pooled
    bigger = _encode(encoder, to_crystal_input(supercells)).pooled
    assert (bigger - base).abs().amax(dim=1).min() > 1e-4
