"""Z-contrast simulator: column positions, spacing in pixels, Z contrast, seeding, projection invariants."""

from __future__ import annotations

import importlib.util
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmcrystal.modalities.micrograph import (
    MicrographConfig,
    complete_basis,
    pick_zone_axis,
    project_structure,
    simulate_micrograph,
    simulate_micrographs,
)

CLEAN = {"dose": None, "read_noise": 0.0, "background": 0.0}


def _cubic(a: float, frac, z):
    return np.eye(3) * a, np.asarray(frac, dtype=float), np.asarray(z, dtype=float)


def _peaks(image: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
    """(row, col) of local maxima (3x3) above ``threshold`` x the image max."""
    pooled = F.max_pool2d(image[None, None], 3, stride=1, padding=1)[0, 0]
    mask = (image == pooled) & (image > threshold * image.max())
    return torch.nonzero(mask).numpy()


def test_simple_cubic_columns_at_lattice_points():
    cfg = MicrographConfig(zone_axis=(0, 0, 1), image_size=(64, 64), pixel_size=0.2, **CLEAN)
    image, meta = simulate_micrograph(_cubic(4.0, [[0, 0, 0]], [29]), cfg)
    assert image.shape == (64, 64) and image.dtype == torch.float32
    peaks = _peaks(image)
    expected = {(r, c) for r in range(0, 64, 20) for c in range(0, 64, 20)}  # 4 Å / 0.2 Å = 20 px
    assert {tuple(p) for p in peaks} == expected
    assert np.allclose(np.sort(meta.column_pixels, axis=0), np.sort(np.array(sorted(expected)), axis=0))
    assert float(image[10, 10]) < 1e-3  # between columns it is dark


def test_rocksalt_001_column_spacing_is_half_the_lattice_constant():
    a = 5.64  # NaCl, Å; along [001] every column holds one Na and one Cl per repeat, spaced a/2
    frac = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5] * 3]
    cfg = MicrographConfig(zone_axis=(0, 0, 1), image_size=(65, 65), pixel_size=a / 2 / 16, **CLEAN)
    image, meta = simulate_micrograph(_cubic(a, frac, [11] * 4 + [17] * 4), cfg)
    peaks = _peaks(image)
    assert np.all(peaks % 16 == 0) and len(peaks) == 25  # rows/cols 0, 16, ..., 64
    assert np.allclose(meta.column_weights, 11**1.7 + 17**1.7)
    assert meta.repeat_length == pytest.approx(a)


@pytest.mark.parametrize("pixel_size", [0.2, 0.1])
def test_halving_the_pixel_size_doubles_the_spacing_in_pixels(pixel_size):
    cfg = MicrographConfig(zone_axis=(0, 0, 1), image_size=(96, 96), pixel_size=pixel_size, **CLEAN)
    image, _ = simulate_micrograph(_cubic(4.0, [[0, 0, 0]], [42]), cfg)
    peaks = _peaks(image)
    spacing = np.diff(np.unique(peaks[:, 1]))
    assert np.all(spacing == round(4.0 / pixel_size))  # 20 px, then 40 px


@pytest.mark.parametrize("exponent", [1.7, 2.0])
def test_heavier_columns_are_brighter_by_z_to_the_n(exponent):
    # CsCl along [001]: pure Cs columns at (0, 0), pure Cl columns at (a/2, a/2).
    cfg = MicrographConfig(
        zone_axis=(0, 0, 1), image_size=(64, 64), pixel_size=0.2, z_exponent=exponent, normalize="max", **CLEAN
    )
    image, _ = simulate_micrograph(_cubic(4.0, [[0, 0, 0], [0.5, 0.5, 0.5]], [55, 17]), cfg)
    ratio = float(image[30, 30] / image[20, 20])  # Cl column / Cs column
    assert float(image[20, 20]) == pytest.approx(1.0, abs=1e-4)
    assert ratio == pytest.approx((17 / 55) ** exponent, rel=1e-3)


def test_noise_is_seeded_and_has_shot_noise_statistics():
    struct = _cubic(4.0, [[0, 0, 0], [0.5, 0.5, 0.5]], [55, 17])
    noisy = MicrographConfig(zone_axis=(0, 0, 1), image_size=(64, 64), dose=2e4, read_noise=1.5, background=0.1)
    a, _ = simulate_micrograph(struct, noisy)
    b, _ = simulate_micrograph(struct, noisy)
    c, _ = simulate_micrograph(struct, MicrographConfig(**{**noisy.__dict__, "seed": 1}))
    assert torch.equal(a, b) and not torch.equal(a, c)
    counts, _ = simulate_micrograph(struct, MicrographConfig(**{**noisy.__dict__, "normalize": "none"}))
    clean_cfg = MicrographConfig(**{**noisy.__dict__, "dose": None, "read_noise": 0.0, "normalize": "max"})
    clean, _ = simulate_micrograph(struct, clean_cfg)  # (clean / peak + bg) / (1 + bg)
    expected = 2e4 * noisy.pixel_size**2 * clean * (1 + noisy.background)  # counts per pixel
    z = (counts - expected) / torch.sqrt(expected + noisy.read_noise**2)
    assert abs(float(z.mean())) < 0.05 and 0.9 < float(z.std()) < 1.1


def test_auto_zone_axis_picks_shortest_repeat_deterministically():
    assert pick_zone_axis(np.diag([3.0, 4.0, 5.0])) == (1, 0, 0)
    assert pick_zone_axis(np.diag([4.0, 4.0, 3.0])) == (0, 0, 1)
    assert pick_zone_axis(np.eye(3) * 4.0) == (0, 0, 1)  # ties -> first listed
    # fcc primitive cell: a lattice vector is a face diagonal (the densest <110> columns of the cubic cell)
    fcc = 3.6 / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=float)
    _, meta = simulate_micrograph((fcc, [[0, 0, 0]], [29]), MicrographConfig(image_size=(32, 32), **CLEAN))
    assert meta.repeat_length == pytest.approx(3.6 / math.sqrt(2))


def test_complete_basis_is_unimodular():
    for uvw in itertools.product(range(-3, 4), repeat=3):
        if math.gcd(*map(abs, uvw)) != 1:
            continue
        m = complete_basis(uvw)
        assert tuple(m[0]) == uvw and round(abs(np.linalg.det(m))) == 1


def test_fcc_110_projection_conventional_and_primitive_cells_agree():
    a, w = 3.6, 29**1.7  # Cu, Å; the true period along [110] is a/sqrt(2), one atom per column per period
    conv = _cubic(a, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]], [29] * 4)
    cell = project_structure(conv[0], conv[1], np.full(4, w), (1, 1, 0))
    # The conventional cell's lattice repeats every a*sqrt(2): two columns per 2-D cell, two atoms each.
    assert cell.repeat_length == pytest.approx(a * math.sqrt(2))
    assert len(cell.weights) == 2 and np.allclose(cell.weights, 2 * w)
    prim_lattice = a / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=float)
    prim = project_structure(prim_lattice, np.zeros((1, 3)), np.array([w]), (0, 0, 1))  # c_prim || [110]
    assert prim.repeat_length == pytest.approx(a / math.sqrt(2))
    assert len(prim.weights) == 1 and prim.weights[0] == pytest.approx(w)
    for c in (cell, prim):  # same columns per Å² and same scattering per Å along the beam
        assert len(c.weights) / abs(np.linalg.det(c.basis)) == pytest.approx(2 * math.sqrt(2) / a**2)
        assert c.weights[0] / c.repeat_length == pytest.approx(w * math.sqrt(2) / a)


def test_supercell_along_the_beam_and_lattice_shifts_leave_the_image_unchanged(mp20_structures):
    cfg = MicrographConfig(zone_axis=(0, 0, 1), image_size=(48, 48), normalize="max", **CLEAN)
    for structure in mp20_structures[:6]:
        base, meta = simulate_micrograph(structure, cfg)
        doubled, _ = simulate_micrograph(structure * (1, 1, 2), cfg)  # same 2-D lattice, twice the repeat
        assert torch.allclose(base, doubled, atol=1e-4)
        shift = tuple(meta.basis[0] - 2 * meta.basis[1])  # a 2-D lattice vector, Å
        moved, _ = simulate_micrograph(structure, MicrographConfig(**{**cfg.__dict__, "shift": shift}))
        assert torch.allclose(base, moved, atol=1e-4)


def test_column_weights_conserve_total_scattering(mp20_structures):
    for structure in mp20_structures:
        lattice, frac = structure.lattice.matrix, structure.frac_coords
        weights = np.asarray(structure.atomic_numbers, dtype=float) ** 1.7
        cell = project_structure(lattice, frac, weights)
        assert cell.weights.sum() == pytest.approx(weights.sum())
        assert abs(np.linalg.det(cell.basis)) * cell.repeat_length == pytest.approx(structure.volume, rel=1e-6)


def test_real_perovskites_brightest_pixel_on_heaviest_column(perov_structures):
    cfg = MicrographConfig(**CLEAN)
    images, metas = simulate_micrographs(perov_structures, cfg)
    assert images.shape == (len(perov_structures), 128, 128)
    for image, meta in zip(images, metas, strict=True):
        assert float(image.min()) >= 0.0 and float(image.max()) == pytest.approx(1.0)
        inner = image[8:-8, 8:-8]  # away from columns just outside the field of view
        peak = np.array(np.unravel_index(int(torch.argmax(inner)), inner.shape)) + 8
        distance = np.linalg.norm(meta.column_pixels - peak, axis=1)
        assert distance.min() <= 1.0  # the brightest pixel sits on a projected column ...
        assert meta.column_weights[np.argmin(distance)] == pytest.approx(meta.column_weights.max())  # ... the heaviest


def test_batch_matches_single_images(mp20_structures):
    cfg = MicrographConfig(image_size=(64, 64), seed=7)
    batch, _ = simulate_micrographs(mp20_structures[:3], cfg)
    for b, structure in enumerate(mp20_structures[:3]):
        single, _ = simulate_micrograph(structure, MicrographConfig(**{**cfg.__dict__, "seed": 7 + b}))
        assert torch.allclose(batch[b], single, atol=1e-5)
    assert torch.isfinite(batch).all()


def test_random_shift_and_rotation_are_seeded(mp20_structures):
    cfg = MicrographConfig(image_size=(48, 48), shift=None, rotation=None, seed=3)
    a, meta_a = simulate_micrograph(mp20_structures[0], cfg)
    b, meta_b = simulate_micrograph(mp20_structures[0], cfg)
    assert torch.equal(a, b) and meta_a.rotation == meta_b.rotation and meta_a.shift == meta_b.shift
    _, meta_c = simulate_micrograph(mp20_structures[0], MicrographConfig(**{**cfg.__dict__, "seed": 4}))
    assert meta_c.rotation != meta_a.rotation


def test_bad_inputs_and_abtem_backend():
    struct = _cubic(4.0, [[0, 0, 0]], [29])
    with pytest.raises(ValueError, match="zone axis"):
        simulate_micrograph(struct, MicrographConfig(zone_axis=(0, 0, 0)))
    if importlib.util.find_spec("abtem") is None:
        with pytest.raises(ImportError, match="abtem"):
            simulate_micrograph(struct, MicrographConfig(backend="abtem"))


def test_nearly_coincident_atoms_merge_into_one_column():
    # Two atoms 0.04 Å apart in projection (a distorted cell) are one column; 0.4 Å apart they are two.
    for dx, n_columns in ((0.01, 1), (0.1, 2)):
        cell = project_structure(np.eye(3) * 4.0, np.array([[0.0, 0, 0], [dx, 0, 0.5]]), np.array([100.0, 30.0]))
        assert len(cell.weights) == n_columns and cell.weights.sum() == pytest.approx(130.0)
    merged = project_structure(np.eye(3) * 4.0, np.array([[0.99, 0, 0], [0.0, 0, 0.5]]), np.array([1.0, 1.0]))
    x = merged.columns[0, 0] % 4.0
    assert min(x, 4.0 - x) == pytest.approx(0.02)  # averaged across the cell edge, not to the middle


def test_chunked_rendering_matches_one_batch(mp20_structures, monkeypatch):
    import mmcrystal.modalities.micrograph as micrograph

    cfg = MicrographConfig(image_size=(40, 40), **CLEAN)
    whole, _ = simulate_micrographs(mp20_structures[:5], cfg)
    monkeypatch.setattr(micrograph, "_MAX_BATCH_COLUMNS", 64)  # forces one or two images per bmm
    chunked, _ = simulate_micrographs(mp20_structures[:5], cfg)
    assert torch.allclose(whole, chunked, atol=1e-6)
