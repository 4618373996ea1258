"""Batched, differentiable powder-XRD simulation in torch.

Kinematic powder diffraction as in pymatgen's ``XRDCalculator`` (formalism of De Graef & McHenry, *Structure of
Materials*, ch. 11-12), vectorised over a batch of crystals:

1. Reflections: every reciprocal-lattice point G = h a* + k b* + l c* (rows of inv(L)^T, 1/Å, no 2 pi) with
   g_min <= |G| <= g_max, where g = 2 sin(theta) / lambda. Friedel's law I(G) = I(-G) holds (real form factors, no
   anomalous dispersion), so only the half space (h > 0, or h = 0 and k > 0, or h = k = 0 and l > 0) is computed and
   counted twice. Multiplicities come from enumerating all symmetry-equivalent points, as in pymatgen.
2. F(G) = sum_j w_j f_j(s) exp(-B_j s^2) exp(2 pi i h . x_j) with s = |G| / 2 (``scattering.form_factor``).
3. I = |F|^2 (1 + cos^2 2theta) / (sin^2 theta cos theta) (Lorentz-polarisation).

The hkl set is discrete: it is chosen from detached values; positions 2theta(L) and intensities I(L, x) are
differentiable w.r.t. the lattice and the fractional coordinates. Reflections are kept ragged (flat list plus crystal
index, like atoms in a ``CrystalBatch``) so that one large cell does not pad the whole batch; steps 1-2 live in
``scattering.py`` (``enumerate_hkl``, ``structure_factors``) and run in chunks of at most
``XRDConfig.chunk_elements`` entries. This module adds the Lorentz-polarisation factor, peak profiles on a fixed 2theta
grid, normalisation, and pymatgen-compatible peak lists (``merge_peaks``). Tensors follow the inputs' device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mmcrystal.modalities.scattering import (
    MAX_Z,
    atomic_number,
    enumerate_hkl,
    pad_atoms,
    scattering_table,
    structure_factors,
    wavelength_angstrom,
)

# pymatgen AbstractDiffractionPatternCalculator: reflections whose 2theta round to the same multiple of TWO_THETA_TOL
# (degrees) are one peak; peaks at or below SCALED_INTENSITY_TOL on the 0-100 scale are dropped.
TWO_THETA_TOL = 1e-5
SCALED_INTENSITY_TOL = 1e-3
_PROFILES = ("gaussian", "pseudo_voigt", "sticks")
_NORMALIZATIONS = ("max", "max100", "none")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class XRDConfig:
    """Settings of the powder-XRD simulator.

    Attributes:
        wavelength: radiation name as in pymatgen (``"CuKa"``, ``"MoKa"``, ``"CuKa1"``, ...) or a wavelength in Å.
        two_theta_min: lower end of the 2theta range and grid, degrees.
        two_theta_max: upper end of the 2theta range and grid, degrees (at most 180).
        n_bins: number of grid points, spaced evenly from ``two_theta_min`` to ``two_theta_max`` inclusive.
        profile: ``"gaussian"``, ``"pseudo_voigt"`` (eta * Lorentzian + (1 - eta) * Gaussian, same FWHM) or
            ``"sticks"`` (each reflection split linearly between its two nearest grid points).
        fwhm: peak full width at half maximum, 2theta degrees (ignored when ``caglioti`` is set); keep it above
            about two grid steps (``step``), or peak heights depend on where a peak falls between grid points.
        caglioti: optional (U, V, W) in degrees^2: FWHM^2 = U tan^2(theta) + V tan(theta) + W (Caglioti, Paoletti &
            Ricci, Nucl. Instrum. 3, 223 (1958)).
        eta: Lorentzian fraction of the pseudo-Voigt profile, in [0, 1].
        profile_cutoff: half-width of the window a peak is evaluated on, in FWHMs; None picks 3 for Gaussian
            (truncated tail < 1e-10 of the height) and 20 for pseudo-Voigt (Lorentzian tail < 0.1 %).
        debye_waller: isotropic Debye-Waller B in Å^2, one number for all elements or ``{symbol: B}``; each
            form factor is multiplied by exp(-B s^2) as in pymatgen's ``debye_waller_factors``. None: no damping.
        normalization: ``"max"`` (pattern maximum 1), ``"max100"`` (maximum 100) or ``"none"`` (profiles have unit
            area in degrees, so values are intensity per degree).
        dtype: ``"float32"`` or ``"float64"``; None follows the lattice tensor (float64 for structures).
        chunk_elements: bound on the entries of the largest temporary (reflections x atoms, reflections x window);
            it caps memory and does not change results.
    """

    wavelength: str | float = "CuKa"
    two_theta_min: float = 5.0
    two_theta_max: float = 90.0
    n_bins: int = 4096
    profile: str = "gaussian"
    fwhm: float = 0.1
    caglioti: tuple[float, float, float] | None = None
    eta: float = 0.5
    profile_cutoff: float | None = None
    debye_waller: float | dict[str, float] | None = None
    normalization: str = "max"
    dtype: str | None = None
    chunk_elements: int = 2**22

    def __post_init__(self) -> None:
        wavelength_angstrom(self.wavelength)
        if not 0.0 <= self.two_theta_min < self.two_theta_max <= 180.0:
            raise ValueError(
                f"need 0 <= two_theta_min < two_theta_max <= 180, got {self.two_theta_min}, {self.two_theta_max}"
            )
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins}")
        if self.profile not in _PROFILES:
            raise ValueError(f"profile must be one of {_PROFILES}, got {self.profile!r}")
        if self.normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {self.normalization!r}")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)} or None, got {self.dtype!r}")
        if self.caglioti is None and not self.fwhm > 0:
            raise ValueError(f"fwhm must be positive (degrees), got {self.fwhm}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    @property
    def wavelength_angstrom(self) -> float:
        """The wavelength in Å."""
        return wavelength_angstrom(self.wavelength)

    @property
    def step(self) -> float:
        """Grid spacing in 2theta degrees."""
        return (self.two_theta_max - self.two_theta_min) / (self.n_bins - 1)


@dataclass
class Reflections:
    """Reflections of a batch of crystals, ragged over crystals (half space; intensities include the Friedel mate).

    Attributes:
        two_theta: (R,) Bragg angle 2theta in degrees.
        intensity: (R,) |F|^2 x Lorentz-polarisation x 2, arbitrary units.
        crystal: (R,) long, index of the crystal each reflection belongs to (sorted).
        hkl: (R, 3) long Miller indices.
    """

    two_theta: torch.Tensor
    intensity: torch.Tensor
    crystal: torch.Tensor
    hkl: torch.Tensor


def two_theta_grid(config: XRDConfig, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The pattern grid, (n_bins,) 2theta degrees."""
    return torch.linspace(config.two_theta_min, config.two_theta_max, config.n_bins, device=device, dtype=dtype)


def _g_from_two_theta(two_theta_deg: float, wavelength: float) -> float:
    """|G| = 2 sin(theta) / lambda in 1/Å for a 2theta in degrees (clamped to the limiting sphere)."""
    return 2.0 * math.sin(math.radians(min(max(two_theta_deg, 0.0), 180.0) / 2.0)) / wavelength


def _debye_waller_table(config: XRDConfig, device, dtype) -> torch.Tensor | None:
    """(119,) B in Å^2 by atomic number, or None."""
    dw = config.debye_waller
    if dw is None or (isinstance(dw, int | float) and dw == 0):
        return None
    table = torch.zeros(MAX_Z + 1, dtype=dtype)
    if isinstance(dw, dict):
        for symbol, value in dw.items():
            table[atomic_number(symbol)] = float(value)
    else:
        table[:] = float(dw)
    return table.to(device)


def simulate_reflections(
    lattice: torch.Tensor,
    frac_coords: torch.Tensor,
    atomic_numbers: torch.Tensor,
    num_atoms: torch.Tensor,
    config: XRDConfig | None = None,
    weights: torch.Tensor | None = None,
    margin: float = 0.0,
) -> Reflections:
    """All reflections with 2theta in [two_theta_min - margin, two_theta_max + margin] (pymatgen's |G| test).

    Args:
        lattice: (B, 3, 3) rows are lattice vectors, Å (cart = frac @ lattice).
        frac_coords: (N, 3) fractional coordinates, atoms sorted by crystal.
        atomic_numbers: (N,) long.
        num_atoms: (B,) long.
        config: simulator settings (wavelength, range, Debye-Waller, dtype, chunking).
        weights: optional (N,) site occupancies (default 1).
        margin: extra 2theta degrees on both sides (profile tails).

    Returns:
        Ragged ``Reflections``; ``two_theta`` and ``intensity`` carry gradients to ``lattice`` and ``frac_coords``.
    """
    config = config or XRDConfig()
    dtype = _DTYPES[config.dtype] if config.dtype else lattice.dtype
    lattice, frac_coords = lattice.to(dtype), frac_coords.to(dtype)
    numbers, num_atoms = atomic_numbers.long(), num_atoms.long()
    weights = torch.ones_like(frac_coords[:, 0]) if weights is None else weights.to(dtype)
    _check_elements(numbers)
    lam = config.wavelength_angstrom
    g_min = _g_from_two_theta(config.two_theta_min - margin, lam)
    g_max = _g_from_two_theta(config.two_theta_max + margin, lam)
    hkl, crystal = enumerate_hkl(lattice, g_min, g_max)  # (R, 3), (R,) detached
    atoms = pad_atoms(frac_coords, numbers, num_atoms, weights)
    dw_table = _debye_waller_table(config, lattice.device, dtype)
    recip = torch.linalg.inv(lattice).transpose(-1, -2)  # (B, 3, 3) rows a*, b*, c*; differentiable
    g2, f_sq = structure_factors(hkl, crystal, recip, atoms, num_atoms, dw_table, config.chunk_elements)
    sin_t = (lam / 2.0 * torch.sqrt(g2)).clamp(max=1.0 - 1e-12)  # Bragg: sin(theta) = lambda |G| / 2
    theta = torch.asin(sin_t)  # (R,) radians
    lorentz_pol = (1.0 + torch.cos(2.0 * theta) ** 2) / (sin_t**2 * torch.cos(theta))
    # Factor 2: the Friedel mate -G of each half-space reflection has the same 2theta and |F|^2.
    return Reflections(torch.rad2deg(2.0 * theta), 2.0 * f_sq * lorentz_pol, crystal, hkl)


def _check_elements(numbers: torch.Tensor) -> None:
    _, _, known = scattering_table(numbers.device)
    if numbers.numel() and not bool(known[numbers].all()):
        missing = sorted({int(z) for z in numbers[~known[numbers]].tolist()})
        raise ValueError(f"no atomic scattering coefficients for atomic numbers {missing}")


def _fwhm(config: XRDConfig, two_theta: torch.Tensor) -> torch.Tensor:
    """Peak FWHM in 2theta degrees at the given 2theta (constant or Caglioti)."""
    if config.caglioti is None:
        return torch.full_like(two_theta, config.fwhm)
    u, v, w = config.caglioti
    tan_t = torch.tan(torch.deg2rad(two_theta) / 2.0)
    return torch.sqrt((u * tan_t**2 + v * tan_t + w).clamp(min=1e-12))


def _window_half_width(config: XRDConfig) -> tuple[int, float]:
    """Half-width of the profile window in grid points, and the largest FWHM on the grid (degrees)."""
    grid = two_theta_grid(config, dtype=torch.float64)
    max_fwhm = float(_fwhm(config, grid).max())
    cutoff = config.profile_cutoff or (3.0 if config.profile == "gaussian" else 20.0)
    return int(math.ceil(cutoff * max_fwhm / config.step)), cutoff * max_fwhm


def _profile(x: torch.Tensor, fwhm: torch.Tensor, scale: torch.Tensor, config: XRDConfig) -> torch.Tensor:
    """``scale`` times a unit-area peak shape (1/degree) at offsets x (degrees) from the centre."""
    ln2 = math.log(2.0)
    gauss = torch.exp((x / fwhm) ** 2 * (-4.0 * ln2)) * (scale * (math.sqrt(4.0 * ln2 / math.pi) / fwhm))
    if config.profile == "gaussian":
        return gauss
    lorentz = (scale * (2.0 / math.pi) / fwhm) / (1.0 + 4.0 * (x / fwhm) ** 2)
    return config.eta * lorentz + (1.0 - config.eta) * gauss


def render_pattern(reflections: Reflections, num_crystals: int, config: XRDConfig) -> torch.Tensor:
    """Sum peak profiles (or sticks) of ragged reflections on the 2theta grid; no normalisation.

    Each reflection is evaluated on a window of grid points around its centre (window chosen from detached values,
    values differentiable in position, width and intensity) and scattered into its crystal's row.

    Returns:
        (B, n_bins) pattern.
    """
    tt, inten, crystal = reflections.two_theta, reflections.intensity, reflections.crystal
    if config.profile == "sticks":
        return _render_sticks(reflections, num_crystals, config)
    n_bins, step, lo = config.n_bins, config.step, config.two_theta_min
    half, _ = _window_half_width(config)
    # Rows padded by `pad` grid points on both sides so every window lands inside: no masks, one index_add.
    pad = 2 * half + 2
    width = n_bins + 2 * pad
    out = inten.new_zeros(num_crystals * width)
    offsets = torch.arange(-half, half + 1, device=tt.device)  # (W,)
    dx = offsets.to(tt.dtype) * step  # (W,) degrees from the window centre
    rows = max(1, config.chunk_elements // offsets.numel())
    for i in range(0, len(tt), rows):
        c_tt, c_i, c_cr = tt[i : i + rows], inten[i : i + rows], crystal[i : i + rows]
        centre = torch.round((c_tt.detach() - lo) / step).clamp(-half - 1, n_bins + half).long()  # (R,)
        x = dx + ((lo + centre.to(c_tt.dtype) * step) - c_tt)[:, None]  # (R, W) degrees from the peak
        vals = _profile(x, _fwhm(config, c_tt)[:, None], c_i[:, None], config)  # (R, W)
        flat = (c_cr * width + centre + pad)[:, None] + offsets  # (R, W)
        out = out.index_add(0, flat.reshape(-1), vals.reshape(-1))
    return out.view(num_crystals, width)[:, pad : pad + n_bins]


def _render_sticks(reflections: Reflections, num_crystals: int, config: XRDConfig) -> torch.Tensor:
    """Each reflection in range split linearly between its two nearest grid points (keeps the centroid)."""
    tt, inten, crystal = reflections.two_theta, reflections.intensity, reflections.crystal
    n_bins, step, lo = config.n_bins, config.step, config.two_theta_min
    inside = ((tt >= lo) & (tt <= config.two_theta_max)).to(inten.dtype)  # (R,) mask, no gradient
    pos = (tt - lo) / step  # (R,) fractional grid index
    left = torch.floor(pos.detach()).clamp(0, n_bins - 2)
    frac = pos - left  # gradient in position flows through the split
    vals = (inten * inside)[:, None] * torch.stack([1.0 - frac, frac], -1)  # (R, 2)
    flat = (crystal * n_bins + left.long())[:, None] + torch.arange(2, device=tt.device)  # (R, 2)
    out = inten.new_zeros(num_crystals * n_bins).index_add(0, flat.reshape(-1), vals.reshape(-1))
    return out.view(num_crystals, n_bins)


def normalize_pattern(pattern: torch.Tensor, mode: str = "max") -> torch.Tensor:
    """Scale each row of (B, n_bins) to maximum 1 (``"max"``) or 100 (``"max100"``); ``"none"`` returns it as is."""
    if mode == "none":
        return pattern
    peak = pattern.amax(-1, keepdim=True).clamp(min=torch.finfo(pattern.dtype).tiny)
    return pattern / peak * (100.0 if mode == "max100" else 1.0)


def simulate_xrd(
    lattice: torch.Tensor,
    frac_coords: torch.Tensor,
    atomic_numbers: torch.Tensor,
    num_atoms: torch.Tensor,
    config: XRDConfig | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Powder patterns of a flat crystal batch on the config's 2theta grid.

    Args:
        lattice: (B, 3, 3) rows are lattice vectors, Å.
        frac_coords: (N, 3) fractional coordinates, atoms sorted by crystal.
        atomic_numbers: (N,) long.
        num_atoms: (B,) long.
        config: simulator settings.
        weights: optional (N,) site occupancies.

    Returns:
        (B, n_bins) patterns, normalised per ``config.normalization``; differentiable w.r.t. lattice and coords.
    """
    config = config or XRDConfig()
    margin = 0.0 if config.profile == "sticks" else _window_half_width(config)[1]
    refl = simulate_reflections(lattice, frac_coords, atomic_numbers, num_atoms, config, weights, margin)
    return normalize_pattern(render_pattern(refl, num_atoms.numel(), config), config.normalization)


def merge_peaks(
    two_theta: np.ndarray,
    intensity: np.ndarray,
    tol: float = TWO_THETA_TOL,
    scaled_intensity_tol: float = SCALED_INTENSITY_TOL,
    scale: float | None = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge reflections into peaks with the semantics of pymatgen's ``XRDCalculator.get_pattern``.

    Reflections whose 2theta rounds to the same multiple of ``tol`` form one peak (bins, not a chain of neighbours:
    two reflections 0.6 tol apart can land in different peaks); the peak sits at its smallest 2theta (pymatgen keeps
    the first reflection in order of increasing |G|) and its intensity is the sum. Peaks with intensity / max * 100 <=
    ``scaled_intensity_tol`` are dropped, then intensities are scaled to maximum ``scale`` (None: unscaled).

    Args:
        two_theta: (R,) reflection 2theta, degrees.
        intensity: (R,) reflection intensities.

    Returns:
        ``(two_theta, intensity)`` of the peaks, sorted by 2theta.
    """
    two_theta, intensity = np.asarray(two_theta, dtype=float), np.asarray(intensity, dtype=float)
    if two_theta.size == 0:
        return two_theta, intensity
    order = np.argsort(two_theta, kind="stable")
    two_theta, intensity = two_theta[order], intensity[order]
    keys = np.round(two_theta / tol).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    position, summed = two_theta[starts], np.add.reduceat(intensity, starts)
    top = summed.max()
    keep = summed / top * 100.0 > scaled_intensity_tol if top > 0 else np.zeros(len(summed), bool)
    position, summed = position[keep], summed[keep]
    if scale is not None and summed.size:
        summed = summed / summed.max() * scale
    return position, summed


def match_peaks(
    peaks: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    position_tol: float = 0.01,
    intensity_tol: float = 1.0,
    min_intensity: float = 0.5,
) -> list[str]:
    """Compare two peak lists ``(two_theta degrees, intensity 0-100)``; an empty list means they agree.

    Every peak of either list with intensity >= ``min_intensity`` must have, in the other list, a nearest peak within
    ``position_tol`` degrees whose intensity differs by at most ``intensity_tol`` (absolute, 0-100 scale).

    Returns:
        One human-readable reason per disagreeing peak.
    """
    reasons = []
    for (tt_a, in_a), (tt_b, in_b), name in ((peaks, reference, "ours"), (reference, peaks, "reference")):
        other = "reference" if name == "ours" else "ours"
        for t, i in zip(tt_a[in_a >= min_intensity], in_a[in_a >= min_intensity], strict=True):
            j = int(np.argmin(np.abs(tt_b - t))) if len(tt_b) else -1
            if j < 0 or abs(tt_b[j] - t) > position_tol:
                reasons.append(f"{name} peak at {t:.4f} deg (I={i:.2f}) has no {other} peak within {position_tol}")
            elif abs(in_b[j] - i) > intensity_tol:
                reasons.append(f"{name} peak at {t:.4f} deg: I={i:.2f} vs {other} {in_b[j]:.2f}")
    return list(dict.fromkeys(reasons))


def structures_to_tensors(structures: Sequence, dtype: torch.dtype = torch.float64, device=None) -> dict:
    """Flat batch tensors of pymatgen structures; a disordered site gives one entry per species, weighted by occupancy.

    Returns:
        dict with ``lattice`` (B, 3, 3), ``frac_coords`` (N, 3), ``atomic_numbers`` (N,), ``num_atoms`` (B,),
        ``weights`` (N,).
    """
    lattices, coords, numbers, weights, counts = [], [], [], [], []
    for structure in structures:
        n_before = len(numbers)
        for site in structure:
            for species, occupancy in site.species.items():
                coords.append(site.frac_coords)
                numbers.append(atomic_number(species.symbol))
                weights.append(float(occupancy))
        lattices.append(structure.lattice.matrix)
        counts.append(len(numbers) - n_before)
    kw = {"dtype": dtype, "device": device}
    return {
        "lattice": torch.as_tensor(np.asarray(lattices), **kw).reshape(-1, 3, 3),
        "frac_coords": torch.as_tensor(np.asarray(coords), **kw).reshape(-1, 3),
        "atomic_numbers": torch.as_tensor(numbers, dtype=torch.long, device=device),
        "num_atoms": torch.as_tensor(counts, dtype=torch.long, device=device),
        "weights": torch.as_tensor(weights, **kw),
    }


def _structure_batches(structures: Sequence, config: XRDConfig, batch_size: int):
    dtype = _DTYPES[config.dtype] if config.dtype else torch.float64
    for start in range(0, len(structures), batch_size):
        yield structures_to_tensors(structures[start : start + batch_size], dtype=dtype)


def xrd_from_structures(structures: Sequence, config: XRDConfig | None = None, batch_size: int = 128) -> np.ndarray:
    """Patterns of pymatgen structures on the config's grid, (B, n_bins) numpy (float64 unless config.dtype)."""
    config = config or XRDConfig()
    rows = [
        simulate_xrd(**batch, config=config).detach().cpu().numpy()
        for batch in _structure_batches(structures, config, batch_size)
    ]
    return np.concatenate(rows) if rows else np.zeros((0, config.n_bins))


def peaks_from_structures(
    structures: Sequence, config: XRDConfig | None = None, batch_size: int = 128
) -> list[tuple[np.ndarray, np.ndarray]]:
    """pymatgen-like peak lists ``(two_theta, intensity 0-100)`` of each structure, range from the config."""
    config = config or XRDConfig()
    peaks = []
    for batch in _structure_batches(structures, config, batch_size):
        refl = simulate_reflections(**batch, config=config)
        tt, inten = refl.two_theta.detach().cpu().numpy(), refl.intensity.detach().cpu().numpy()
        bounds = np.searchsorted(refl.crystal.cpu().numpy(), np.arange(len(batch["num_atoms"]) + 1))
        peaks += [merge_peaks(tt[lo:hi], inten[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    return peaks


def peaks_from_structure(structure, config: XRDConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """pymatgen-like peak list of one structure: ``(two_theta degrees, intensity scaled to max 100)``."""
    return peaks_from_structures([structure], config)[0]
