"""Powder-XRD simulator: agreement with pymatgen, gradients, symmetries, profiles, peak merging."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mmcrystal.modalities.scattering import WAVELENGTHS, wavelength_angstrom
from mmcrystal.modalities.xrd import (
    XRDConfig,
    match_peaks,
    merge_peaks,
    peaks_from_structure,
    peaks_from_structures,
    simulate_reflections,
    simulate_xrd,
    structures_to_tensors,
    two_theta_grid,
    xrd_from_structures,
)


def _pymatgen_peaks(structures, wavelength="CuKa", two_theta_range=(5.0, 90.0), **kwargs):
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    calc = XRDCalculator(wavelength=wavelength, **kwargs)
    patterns = [calc.get_pattern(s, two_theta_range=two_theta_range) for s in structures]
    return [(np.asarray(p.x), np.asarray(p.y)) for p in patterns]


def _tiny_cell():
    """A distorted 3-atom perovskite-like cell in float64 with gradients on lattice and coordinates."""
    gen = torch.Generator().manual_seed(0)
    lattice = torch.eye(3, dtype=torch.float64) * 3.9 + 0.1 * torch.randn(3, 3, generator=gen, dtype=torch.float64)
    frac = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.1, 0.3]], dtype=torch.float64)
    return lattice[None].requires_grad_(), frac.requires_grad_(), torch.tensor([38, 22, 8]), torch.tensor([3])


def test_peaks_agree_with_pymatgen_on_mp20(mp20_structures):
    ours = peaks_from_structures(mp20_structures)
    theirs = _pymatgen_peaks(mp20_structures)
    failures = {i: r for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if (r := match_peaks(a, b))}
    assert not failures, failures
    # Far tighter than the tolerances: same reflections, same merging, same numbers up to rounding.
    for (tt_a, in_a), (tt_b, in_b) in zip(ours, theirs, strict=True):
        assert len(tt_a) == len(tt_b)
        np.testing.assert_allclose(tt_a, tt_b, atol=1e-6)
        np.testing.assert_allclose(in_a, in_b, atol=1e-6)


def test_other_wavelength_range_and_debye_waller_agree_with_pymatgen(mp20_structures):
    structures = mp20_structures[:12]
    dw = {el.symbol: 0.3 + 0.01 * el.Z for s in structures for el in s.composition}
    config = XRDConfig(wavelength="MoKa", two_theta_min=10.0, two_theta_max=60.0, debye_waller=dw)
    ours = peaks_from_structures(structures, config)
    theirs = _pymatgen_peaks(structures, "MoKa", (10.0, 60.0), debye_waller_factors=dw)
    for a, b in zip(ours, theirs, strict=True):
        assert not match_peaks(a, b, position_tol=1e-6, intensity_tol=1e-6, min_intensity=0.0)


def test_partial_occupancy_agrees_with_pymatgen():
    from pymatgen.core import Lattice, Structure

    structure = Structure(
        Lattice.cubic(3.6),
        [{"Fe": 0.5, "Co": 0.5}, {"Ni": 0.75}, "Al", "Al"],
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    (ours,) = [peaks_from_structure(structure)]
    (theirs,) = _pymatgen_peaks([structure])
    assert not match_peaks(ours, theirs, position_tol=1e-6, intensity_tol=1e-6, min_intensity=0.0)


def test_gradcheck_wrt_lattice_and_coordinates():
    lattice, frac, numbers, num_atoms = _tiny_cell()
    configs = [
        XRDConfig(two_theta_min=20, two_theta_max=60, n_bins=200, fwhm=0.8),
        XRDConfig(
            two_theta_min=20,
            two_theta_max=60,
            n_bins=200,
            profile="pseudo_voigt",
            caglioti=(0.1, -0.05, 0.3),
            debye_waller=0.5,
        ),
        XRDConfig(two_theta_min=20, two_theta_max=60, n_bins=200, profile="sticks", normalization="none"),
    ]
    for config in configs:
        assert torch.autograd.gradcheck(
            lambda lat, x, c=config: simulate_xrd(lat, x, numbers, num_atoms, c), (lattice, frac)
        )


def test_gradients_finite_on_real_batch(mp20_structures):
    batch = structures_to_tensors(mp20_structures[:16], dtype=torch.float32)
    lattice = batch["lattice"].requires_grad_()
    frac = batch["frac_coords"].requires_grad_()
    pattern = simulate_xrd(lattice, frac, batch["atomic_numbers"], batch["num_atoms"], XRDConfig(n_bins=1024))
    (pattern * torch.rand_like(pattern)).sum().backward()
    for grad in (lattice.grad, frac.grad):
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0


def test_invariant_to_rotation_translation_permutation(mp20_structures):
    config = XRDConfig(n_bins=2048)
    b = structures_to_tensors(mp20_structures[:4])
    reference = simulate_xrd(b["lattice"], b["frac_coords"], b["atomic_numbers"], b["num_atoms"], config)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    rotated = simulate_xrd(b["lattice"] @ q, b["frac_coords"], b["atomic_numbers"], b["num_atoms"], config)
    shifted = (b["frac_coords"] + torch.tensor([0.13, -0.41, 0.77], dtype=torch.float64)) % 1.0
    translated = simulate_xrd(b["lattice"], shifted, b["atomic_numbers"], b["num_atoms"], config)
    n0 = int(b["num_atoms"][0])
    perm = torch.cat([torch.randperm(n0), torch.arange(n0, len(b["frac_coords"]))])
    permuted = simulate_xrd(b["lattice"], b["frac_coords"][perm], b["atomic_numbers"][perm], b["num_atoms"], config)
    for other in (rotated, translated, permuted):
        torch.testing.assert_close(other, reference, atol=1e-9, rtol=1e-7)


def test_supercell_gives_the_same_pattern(mp20_structures):
    structure = mp20_structures[1]
    supercell = structure.copy()
    supercell.make_supercell([2, 1, 1])
    patterns = xrd_from_structures([structure, supercell], XRDConfig(n_bins=2048))
    np.testing.assert_allclose(patterns[1], patterns[0], atol=1e-9)


def test_batch_chunking_and_float32_consistency(mp20_structures):
    structures = mp20_structures[:24]
    config = XRDConfig(n_bins=2048)
    batched = xrd_from_structures(structures, config)
    single = np.concatenate([xrd_from_structures([s], config) for s in structures[:6]])
    np.testing.assert_allclose(batched[:6], single, atol=1e-10)
    small_chunks = xrd_from_structures(structures, XRDConfig(n_bins=2048, chunk_elements=997))
    np.testing.assert_allclose(small_chunks, batched, atol=1e-10)
    float32 = xrd_from_structures(structures, XRDConfig(n_bins=2048, dtype="float32"))
    assert float32.dtype == np.float32
    np.testing.assert_allclose(float32, batched, atol=2e-3)


def test_profile_area_position_and_normalisation(mp20_structures):
    b = structures_to_tensors(mp20_structures[:3])
    args = (b["lattice"], b["frac_coords"], b["atomic_numbers"], b["num_atoms"])
    config = XRDConfig(two_theta_min=10.0, two_theta_max=80.0, n_bins=7001, fwhm=0.2, normalization="none")
    refl = simulate_reflections(*args, config=config)
    inside = (refl.two_theta > 12.0) & (refl.two_theta < 78.0)
    for name in ("gaussian", "pseudo_voigt", "sticks"):
        pattern = simulate_xrd(*args, config=XRDConfig(**{**config.__dict__, "profile": name}))
        grid = two_theta_grid(config, dtype=torch.float64)
        window = (grid > 12.0) & (grid < 78.0)
        for c in range(3):
            expected = refl.intensity[inside & (refl.crystal == c)].sum()
            area = pattern[c, window].sum() * (config.step if name != "sticks" else 1.0)
            torch.testing.assert_close(area, expected, rtol=2e-2 if name == "pseudo_voigt" else 1e-3, atol=0.0)
    gauss = simulate_xrd(*args, config=XRDConfig(**{**config.__dict__, "normalization": "max100"}))
    torch.testing.assert_close(gauss.amax(-1), torch.full((3,), 100.0, dtype=torch.float64))
    # The pattern maximum sits on the strongest peak (equivalent reflections merged).
    c0 = refl.crystal == 0
    tt, inten = merge_peaks(refl.two_theta[c0].numpy(), refl.intensity[c0].numpy())
    assert abs(float(grid[gauss[0].argmax()]) - tt[inten.argmax()]) <= config.step


def test_wavelength_names_and_bragg_scaling(mp20_structures):
    assert wavelength_angstrom("CuKa") == 1.54184 and WAVELENGTHS["MoKa"] == 0.71073
    assert wavelength_angstrom(1.0) == 1.0
    with pytest.raises(ValueError, match="unknown radiation"):
        XRDConfig(wavelength="CuKz")
    cu = peaks_from_structure(mp20_structures[0], XRDConfig(two_theta_min=1.0, two_theta_max=60.0))
    mo = peaks_from_structure(mp20_structures[0], XRDConfig(wavelength="MoKa", two_theta_min=1.0, two_theta_max=60.0))
    d_cu = 1.54184 / (2 * np.sin(np.radians(cu[0][:3] / 2)))
    d_mo = 0.71073 / (2 * np.sin(np.radians(mo[0][:3] / 2)))
    np.testing.assert_allclose(d_cu, d_mo, rtol=1e-9)


def test_merge_peaks_follows_pymatgen_binning():
    two_theta = np.array([30.0, 30.000003, 30.00002, 45.0, 60.0, 10.0])
    intensity = np.array([1.0, 2.0, 4.0, 10.0, 1e-6, 5.0])
    tt, inten = merge_peaks(two_theta, intensity)
    # 30.0 and 30.000003 share the 1e-5 bin and sum; 30.00002 is its own peak; 1e-6 is below 1e-3 % of the max.
    np.testing.assert_allclose(tt, [10.0, 30.0, 30.00002, 45.0])
    np.testing.assert_allclose(inten, [50.0, 30.0, 40.0, 100.0])
    tt, inten = merge_peaks(two_theta, intensity, scale=None)
    np.testing.assert_allclose(inten, [5.0, 3.0, 4.0, 10.0])
    assert merge_peaks(np.zeros(0), np.zeros(0))[0].size == 0


def test_match_peaks_reports_disagreements():
    ref = (np.array([20.0, 30.0, 40.0]), np.array([100.0, 50.0, 0.3]))
    assert match_peaks(ref, ref) == []
    shifted = (np.array([20.0, 30.02, 40.0]), np.array([100.0, 50.0, 0.3]))
    assert any("no reference peak" in r for r in match_peaks(shifted, ref))
    weaker = (np.array([20.0, 30.0]), np.array([100.0, 48.0]))
    assert any("I=48.00" in r for r in match_peaks(weaker, ref))
    assert match_peaks((ref[0][:2], ref[1][:2]), ref) == []  # a missing 0.3 peak is below the threshold


def test_config_validation_and_unknown_elements():
    for bad in ({"profile": "lorentz"}, {"two_theta_min": 90.0}, {"normalization": "sum"}, {"fwhm": 0.0}):
        with pytest.raises(ValueError):
            XRDConfig(**bad)
    lattice = torch.eye(3, dtype=torch.float64)[None] * 4.0
    with pytest.raises(ValueError, match="110"):
        simulate_xrd(lattice, torch.zeros(1, 3, dtype=torch.float64), torch.tensor([110]), torch.tensor([1]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(mp20_structures):
    b = structures_to_tensors(mp20_structures[:8], dtype=torch.float32)
    cpu = simulate_xrd(**b, config=XRDConfig())
    cuda = simulate_xrd(**{k: v.cuda() for k, v in b.items()}, config=XRDConfig())
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_agreement_rate_on_1000_mp20_test_structures(shared_data):
    import pandas as pd
    from pymatgen.core import Structure

    frame = pd.read_csv(shared_data / "mp_20" / "test.csv.gz", nrows=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_str(cif, fmt="cif") for cif in frame["cif"]]
    ours = peaks_from_structures(structures)
    theirs = _pymatgen_peaks(structures)
    agree = sum(not match_peaks(a, b) for a, b in zip(ours, theirs, strict=True))
    assert agree / len(structures) >= 0.99
