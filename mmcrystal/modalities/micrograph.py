"""Z-contrast (HAADF-STEM-like) micrograph simulator: incoherent linear imaging of projected atomic columns.

Physics. In high-angle annular dark-field (HAADF) STEM the detected signal is, to a first approximation,
incoherent: the image is the convolution of the probe intensity with an object function made of the projected
atomic columns, each column scattering in proportion to the sum of Z^n over its atoms (Pennycook & Jesson,
Phys. Rev. Lett. 64, 938 (1990); Pennycook & Jesson, Ultramicroscopy 37, 14 (1991)). Measured exponents lie
between about 1.5 and 2; n = 1.64 was reported by Krivanek et al., Nature 464, 571 (2010). Here:

    I(x, y) = sum_k W_k exp(-((x - x_k)^2 + (y - y_k)^2) / (2 sigma^2)),
    W_k = sum over the atoms of column k of occ * Z^n,

with sigma = FWHM / (2 sqrt(2 ln 2)) for the probe-intensity FWHM in Å. Columns are found exactly: for a zone
axis [uvw] (a primitive lattice vector T = u a + v b + w c, the beam direction) the lattice basis is completed
to a unimodular basis (T, g1, g2), so the crystal projects onto a 2-D lattice spanned by the projections of
g1, g2 whose cell holds exactly the N atoms of the 3-D cell. W_k is therefore the column sum over one repeat
|T| along the beam. Atoms projected within ``column_merge`` (0.1 Å) of each other, as in slightly distorted
cells, form one column at their weight-averaged position. Because the Gaussian is separable, the image of K
columns is a matrix product, I = Gy^T diag(W) Gx with Gy (K, H) and Gx (K, W), batched over images with
``torch.bmm``.

Noise. The clean image is scaled so that its brightest pixel receives ``dose * pixel_size^2`` expected counts
(the *effective* dose reaching the detector, i.e. incident electrons/Å² times the detector collection
fraction), plus a uniform ``background`` fraction; counts are drawn from a Poisson law and Gaussian read noise
(counts) is added. All randomness (noise, and optional random shift / in-plane rotation) is seeded per image.

Normalisation of the output (``MicrographConfig.normalize``): "minmax" (default) maps each image to [0, 1];
"max" divides by the image maximum (keeps intensity ratios: use it to compare column brightness); "zscore"
gives zero mean and unit standard deviation; "none" returns counts (with a dose) or the clean Σ Z^n-weighted
intensity.

Geometry and orientation. Pixel (row i, column j) is centred at y = i * pixel_size, x = j * pixel_size (Å), so
a column at (x, y) appears at pixel (y / pixel_size, x / pixel_size). The image x axis lies along the shortest
vector of the (Lagrange-reduced) projected 2-D lattice and (x, y, beam) is right-handed; the cell origin
projects onto pixel (0, 0) unless a shift is set. With ``zone_axis=None`` the axis is picked deterministically
among the 13 low-index directions <100>, <110>, <111> (in the basis of the given cell): the one with the
shortest repeat |T|, i.e. the densest columns; ties go to the first in ``LOW_INDEX_AXES``.

Limits (stated plainly): incoherent linear imaging only; no channelling, cross-talk or dynamical scattering;
no probe aberrations or defocus beyond the Gaussian blur; no thermal diffuse scattering or Debye-Waller
damping; no specimen-thickness effects beyond the column sums over one repeat (intensity is linear in
thickness, so it cancels in the normalisation); point sampling at pixel centres (no scan distortion, drift or
detector response). It gives qualitatively right Z-contrast and exact projected geometry, not quantitative
HAADF intensities. A multislice backend (abTEM) is not implemented; ``backend="abtem"`` raises ImportError
while abTEM is absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

# Low-index zone axes tried by ``pick_zone_axis``, in tie-break order.
LOW_INDEX_AXES: tuple[tuple[int, int, int], ...] = (
    (0, 0, 1), (0, 1, 0), (1, 0, 0),
    (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, -1, 0), (1, 0, -1), (0, 1, -1),
    (1, 1, 1), (-1, 1, 1), (1, -1, 1), (1, 1, -1),
)  # fmt: skip
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_MAX_BATCH_COLUMNS = 1 << 16  # columns rendered per bmm call (each costs (H + W) floats of Gaussian table)
_PROBE_CUTOFF = 4.0  # columns farther than 4 sigma outside the field of view are dropped (exp(-8) ~ 3e-4)


@dataclass
class MicrographConfig:
    """Settings of the Z-contrast simulator.

    Attributes:
        zone_axis: Beam direction [uvw] in the basis of the given cell; None picks a low-index axis.
        image_size: (H, W) in pixels.
        pixel_size: Sampling in Å per pixel.
        probe_fwhm: Full width at half maximum of the probe intensity in Å.
        z_exponent: Exponent n of the Z^n column weights (about 1.6-2 for HAADF).
        dose: Effective dose (electrons/Å²) reaching the detector at the brightest pixel; None: no shot noise.
        read_noise: Standard deviation of the Gaussian read noise in counts (0 disables it); with
            ``dose=None`` it is relative to the brightest pixel (peak = 1).
        background: Uniform background as a fraction of the brightest pixel, added before the shot noise.
        shift: In-plane translation of the crystal in Å (x, y); None draws a seeded random shift.
        rotation: In-plane rotation in degrees; None draws a seeded uniform random angle.
        column_merge: Atoms projected within this distance (Å) count as one column (metadata; the image is
            rendered from the merged, weight-averaged positions).
        normalize: "minmax", "max", "zscore" or "none" (see the module docstring).
        seed: Seed of the noise and of the random shift / rotation (image b of a batch uses seed + b).
        backend: "incoherent" (this module) or "abtem" (multislice; needs the abTEM package).
    """

    zone_axis: tuple[int, int, int] | None = None
    image_size: tuple[int, int] = (128, 128)
    pixel_size: float = 0.15
    probe_fwhm: float = 0.9
    z_exponent: float = 1.7
    dose: float | None = 2.0e4
    read_noise: float = 2.0
    background: float = 0.02
    shift: tuple[float, float] | None = (0.0, 0.0)
    rotation: float | None = 0.0
    column_merge: float = 0.1
    normalize: Literal["minmax", "max", "zscore", "none"] = "minmax"
    seed: int = 0
    backend: Literal["incoherent", "abtem"] = "incoherent"


@dataclass
class ProjectedCell:
    """A crystal projected along a zone axis: a 2-D lattice and the weighted columns of one cell.

    Attributes:
        zone_axis: The primitive [uvw] used.
        beam_direction: Unit vector of the beam in Cartesian coordinates of the input lattice, shape (3,).
        repeat_length: |T|, the period along the beam in Å.
        basis: Rows are the reduced 2-D lattice vectors in the image frame, shape (2, 2), Å.
        columns: Column positions in the image frame inside one 2-D cell, shape (K, 2), Å (x, y).
        weights: Σ occ·Z^n per column over one repeat, shape (K,).
    """

    zone_axis: tuple[int, int, int]
    beam_direction: np.ndarray
    repeat_length: float
    basis: np.ndarray
    columns: np.ndarray
    weights: np.ndarray


@dataclass
class MicrographMeta:
    """Geometry of a simulated micrograph, for checks and for the dataset manifest.

    Attributes:
        zone_axis: The [uvw] used. pixel_size: Å per pixel. image_size: (H, W). probe_fwhm: Å.
        repeat_length: Period along the beam in Å. shift: Applied (x, y) shift in Å. rotation: Degrees.
        basis: 2-D lattice vectors in the image frame after rotation, shape (2, 2), Å.
        column_pixels: (row, col) pixel coordinates of the columns inside the image, shape (K, 2).
        column_weights: Their Σ occ·Z^n weights, shape (K,).
    """

    zone_axis: tuple[int, int, int]
    pixel_size: float
    image_size: tuple[int, int]
    probe_fwhm: float
    repeat_length: float
    shift: tuple[float, float]
    rotation: float
    basis: np.ndarray
    column_pixels: np.ndarray = field(repr=False)
    column_weights: np.ndarray = field(repr=False)


def _structure_arrays(structure, z_exponent: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lattice (3, 3) Å, frac (N, 3), weights (N,)) from a Structure or a (lattice, frac, Z) tuple."""
    if isinstance(structure, (tuple, list)):
        lattice, frac, z = (np.asarray(a, dtype=np.float64) for a in structure)
        return lattice.reshape(3, 3), frac.reshape(-1, 3), z.reshape(-1) ** z_exponent
    lattice = np.asarray(structure.lattice.matrix, dtype=np.float64)
    frac = np.asarray(structure.frac_coords, dtype=np.float64)
    if structure.is_ordered:
        weights = np.asarray(structure.atomic_numbers, dtype=np.float64) ** z_exponent
    else:  # partial occupancies: occupancy-weighted Z^n per site
        weights = np.array(
            [sum(occ * getattr(sp, "Z", 0) ** z_exponent for sp, occ in site.species.items()) for site in structure]
        )
    return lattice, frac, weights


def pick_zone_axis(lattice: np.ndarray) -> tuple[int, int, int]:
    """The low-index axis with the shortest repeat |u a + v b + w c| (densest columns); ties: first listed."""
    axes = np.array(LOW_INDEX_AXES, dtype=np.float64)  # (13, 3)
    repeats = np.linalg.norm(axes @ np.asarray(lattice, dtype=np.float64), axis=1)  # (13,) Å
    best = int(np.flatnonzero(repeats <= repeats.min() + 1e-3)[0])
    return LOW_INDEX_AXES[best]


def _egcd(a: int, b: int) -> tuple[int, int, int]:
    """(g, p, q) with p*a + q*b = g = gcd(a, b) >= 0."""
    old_r, r, old_p, p, old_q, q = a, b, 1, 0, 0, 1
    while r != 0:
        k = old_r // r
        old_r, r = r, old_r - k * r
        old_p, p = p, old_p - k * p
        old_q, q = q, old_q - k * q
    if old_r < 0:
        old_r, old_p, old_q = -old_r, -old_p, -old_q
    return old_r, old_p, old_q


def complete_basis(uvw: tuple[int, int, int]) -> np.ndarray:
    """Integer (3, 3) matrix with first row uvw (primitive) and determinant ±1.

    With g = gcd(u, v) = p u + q v the rows (-q, p, 0) and (x u/g, x v/g, c) give det = c g - w x, and
    c g - w x = 1 is solved by the extended Euclid algorithm on (g, w), which are coprime.
    """
    u, v, w = (int(t) for t in uvw)
    g, p, q = _egcd(u, v)
    if g == 0:  # uvw = (0, 0, ±1)
        return np.array([[0, 0, w], [1, 0, 0], [0, 1, 0]])
    _, c, y = _egcd(g, w)  # c g + y w = 1
    x = -y
    return np.array([[u, v, w], [-q, p, 0], [x * u // g, x * v // g, c]])


def _reduce_2d(b1: np.ndarray, b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange-Gauss reduction of a 2-D lattice basis: |b1| <= |b2| and |b1.b2| <= |b1|²/2."""
    for _ in range(100):
        if b1 @ b1 > b2 @ b2:
            b1, b2 = b2, b1
        mu = round(float(b1 @ b2) / float(b1 @ b1))
        if mu == 0:
            break
        b2 = b2 - mu * b1
    return b1, b2


def _primitive_axis(zone_axis) -> tuple[int, int, int]:
    uvw = [int(t) for t in zone_axis]
    g = math.gcd(*(abs(t) for t in uvw)) if len(uvw) == 3 else 0
    if g == 0:
        raise ValueError(f"zone axis must be three integers, not all zero; got {zone_axis!r}")
    return tuple(t // g for t in uvw)


def _merge_columns(
    frac2: np.ndarray, weights: np.ndarray, basis: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Group projected atoms (N, 2) closer than ``tol`` Å (periodic, chained) -> column frac (K, 2), weights (K,)."""
    diff = frac2[:, None, :] - frac2[None, :, :]
    diff -= np.round(diff)  # minimum image in the reduced cell
    close = np.linalg.norm(diff @ basis, axis=-1) <= tol  # (N, N)
    labels = np.arange(len(frac2))
    while True:  # connected components by label propagation; N is small
        new = np.where(close, labels[None, :], len(labels)).min(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    _, first, labels = np.unique(labels, return_index=True, return_inverse=True)
    offsets = frac2 - frac2[first][labels]
    offsets -= np.round(offsets)  # (N, 2) from each column's first atom
    mass = weights + 1e-12  # weight-averaged position; also defined for zero weights
    total = np.bincount(labels, weights=mass)
    mean = np.stack([np.bincount(labels, weights=mass * offsets[:, d]) for d in (0, 1)], axis=1) / total[:, None]
    return (frac2[first] + mean) % 1.0, np.bincount(labels, weights=weights, minlength=len(first))


def project_structure(
    lattice: np.ndarray, frac: np.ndarray, weights: np.ndarray, zone_axis=None, merge_tol: float = 0.1
) -> ProjectedCell:
    """Project a periodic crystal along a zone axis into weighted columns of one 2-D cell.

    Args:
        lattice: Rows are the lattice vectors a, b, c, shape (3, 3), Å.
        frac: Fractional coordinates, shape (N, 3).
        weights: Per-atom weights (occ·Z^n), shape (N,).
        zone_axis: [uvw]; None picks one with ``pick_zone_axis``.
        merge_tol: Atoms whose projections lie within this distance (Å, chained) form one column, placed at
            their weight-averaged position; 0.1 Å is far below the probe size, so the image barely changes.

    Returns:
        The projected cell (columns and 2-D basis in the image frame).
    """
    uvw = pick_zone_axis(lattice) if zone_axis is None else _primitive_axis(zone_axis)
    cart_basis = complete_basis(uvw).astype(np.float64) @ lattice  # rows T, g1, g2 in Å
    t_vec = cart_basis[0]
    repeat = float(np.linalg.norm(t_vec))
    beam = t_vec / repeat
    in_plane = cart_basis[1:] - np.outer(cart_basis[1:] @ beam, beam)  # (2, 3) projections of g1, g2
    p1, p2 = _reduce_2d(in_plane[0], in_plane[1])
    e1 = p1 / np.linalg.norm(p1)
    e2 = np.cross(beam, e1)  # (e1, e2, beam) right-handed
    frame = np.stack([e1, e2], axis=1)  # (3, 2)
    basis = np.stack([p1, p2]) @ frame  # (2, 2) Å
    xy = (frac @ lattice) @ frame  # (N, 2) Å
    frac2 = np.linalg.solve(basis.T, xy.T).T % 1.0  # (N, 2) in the reduced 2-D cell
    col_frac, col_w = _merge_columns(frac2, weights, basis, merge_tol)
    return ProjectedCell(uvw, beam, repeat, basis, col_frac @ basis, col_w)


def tile_columns(
    cell: ProjectedCell, extent: tuple[float, float], margin: float, shift=(0.0, 0.0), rotation: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile the projected cell over a field of view.

    Args:
        cell: Output of ``project_structure``.
        extent: (x_max, y_max) of the field of view in Å (it starts at 0).
        margin: Columns up to this far outside the field of view are kept (Å).
        shift: (x, y) translation in Å. rotation: In-plane rotation in degrees.

    Returns:
        positions (K, 2) Å as (x, y), weights (K,), and the rotated 2-D basis (2, 2).
    """
    angle = math.radians(rotation)
    rot = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])  # row vectors
    basis = cell.basis @ rot
    columns = cell.columns @ rot + np.asarray(shift, dtype=np.float64)
    lo, hi = -margin, np.asarray(extent) + margin
    corners = np.array([[lo, lo], [hi[0], lo], [lo, hi[1]], [hi[0], hi[1]]])  # (4, 2)
    coef = np.linalg.solve(basis.T, (corners - columns.mean(axis=0)).T).T  # (4, 2) in lattice units
    span = np.linalg.norm(np.linalg.solve(basis.T, (columns - columns.mean(axis=0)).T), axis=0).max()
    m_lo, n_lo = np.floor(coef.min(axis=0) - span - 1).astype(int)
    m_hi, n_hi = np.ceil(coef.max(axis=0) + span + 1).astype(int)
    mm, nn = np.meshgrid(np.arange(m_lo, m_hi + 1), np.arange(n_lo, n_hi + 1), indexing="ij")
    origins = np.stack([mm.ravel(), nn.ravel()], axis=1) @ basis  # (C, 2) Å
    pos = (origins[:, None, :] + columns[None, :, :]).reshape(-1, 2)  # (C*K, 2)
    wts = np.broadcast_to(cell.weights, (len(origins), len(columns))).reshape(-1)
    keep = np.all((pos >= lo) & (pos <= hi), axis=1)
    return pos[keep], wts[keep], basis


def render_columns(
    positions: list[np.ndarray],
    weights: list[np.ndarray],
    image_size: tuple[int, int],
    pixel_size: float,
    fwhm: float,
) -> torch.Tensor:
    """Render Gaussian columns of B images at once: I_b = Gy_b^T diag(W_b) Gx_b.

    Args:
        positions: Per image, column (x, y) positions in Å, shape (K_b, 2).
        weights: Per image, column weights, shape (K_b,).
        image_size: (H, W). pixel_size: Å per pixel. fwhm: Probe FWHM in Å.

    Returns:
        Clean images, shape (B, H, W), float32.
    """
    height, width = image_size
    k_max = max(max((len(w) for w in weights), default=0), 1)
    chunk = max(1, _MAX_BATCH_COLUMNS // k_max)  # bounds the (B, K, W) Gaussian tables for large fields of view
    if len(positions) > chunk:
        parts = [
            render_columns(positions[i : i + chunk], weights[i : i + chunk], image_size, pixel_size, fwhm)
            for i in range(0, len(positions), chunk)
        ]
        return torch.cat(parts)
    pos = torch.zeros(len(positions), k_max, 2, dtype=torch.float32)
    wts = torch.zeros(len(positions), k_max, dtype=torch.float32)  # padded columns have zero weight
    for b, (p, w) in enumerate(zip(positions, weights, strict=True)):
        pos[b, : len(w)] = torch.from_numpy(np.asarray(p, dtype=np.float32))
        wts[b, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    inv_two_var = 1.0 / (2.0 * (fwhm * _FWHM_TO_SIGMA) ** 2)  # 1/Å²
    xs = torch.arange(width, dtype=torch.float32) * pixel_size  # (W,) Å
    ys = torch.arange(height, dtype=torch.float32) * pixel_size  # (H,) Å
    gx = (xs - pos[..., 0:1]).square_().mul_(-inv_two_var).exp_()  # (B, K, W), in place: fewer allocations
    gy = (ys - pos[..., 1:2]).square_().mul_(-inv_two_var).exp_().mul_(wts[..., None])  # (B, K, H)
    return torch.bmm(gy.transpose(1, 2), gx)  # (B, H, W)


def add_noise(clean: torch.Tensor, config: MicrographConfig, seeds: list[int]) -> torch.Tensor:
    """Shot (Poisson) and read (Gaussian) noise in counts; clean (B, H, W) -> noisy counts (B, H, W)."""
    peak = clean.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    if config.dose is None and config.read_noise <= 0:
        return clean + config.background * peak  # noiseless, in Σ Z^n units
    signal = clean / peak + config.background  # (B, H, W), brightest pixel = 1 + background
    # Expected counts of the brightest pixel: dose (e/Å²) * pixel area (Å²); without a dose the peak is 1.
    counts_per_unit = 1.0 if config.dose is None else config.dose * config.pixel_size**2
    out = torch.empty_like(signal)
    for b, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(int(seed))
        img = signal[b] * counts_per_unit
        if config.dose is not None:
            img = torch.poisson(img, generator=gen)
        if config.read_noise > 0:
            img = img + config.read_noise * torch.randn(img.shape, generator=gen)
        out[b] = img
    return out


def normalize_images(images: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-image normalisation of (B, H, W): "minmax" -> [0, 1], "max" -> max 1, "zscore", or "none"."""
    if mode == "none":
        return images
    if mode == "max":
        return images / images.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    if mode == "minmax":
        lo = images.amin(dim=(1, 2), keepdim=True)
        hi = images.amax(dim=(1, 2), keepdim=True)
        return (images - lo) / (hi - lo).clamp_min(1e-12)
    if mode == "zscore":
        mean = images.mean(dim=(1, 2), keepdim=True)
        return (images - mean) / images.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    raise ValueError(f"unknown normalisation {mode!r}; use 'minmax', 'max', 'zscore' or 'none'")


def _require_abtem() -> None:
    try:
        import abtem  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "backend='abtem' needs the optional package `abtem` (multislice), which is not installed; "
            "install it yourself (pip install abtem) or use backend='incoherent'"
        ) from err
    raise NotImplementedError("the abTEM multislice backend is not implemented yet; use backend='incoherent'")


def _image_geometry(structure, config: MicrographConfig, seed: int):
    """Columns inside the field of view (+ probe margin) and the metadata of one image."""
    lattice, frac, weights = _structure_arrays(structure, config.z_exponent)
    cell = project_structure(lattice, frac, weights, config.zone_axis, config.column_merge)
    rng = np.random.default_rng(seed)
    rotation = float(rng.uniform(0.0, 360.0)) if config.rotation is None else float(config.rotation)
    shift = tuple(rng.uniform(0.0, 1.0, 2) @ cell.basis) if config.shift is None else tuple(config.shift)
    height, width = config.image_size
    extent = ((width - 1) * config.pixel_size, (height - 1) * config.pixel_size)
    margin = _PROBE_CUTOFF * config.probe_fwhm * _FWHM_TO_SIGMA
    pos, wts, basis = tile_columns(cell, extent, margin, shift, rotation)
    inside = np.all((pos >= -0.5 * config.pixel_size) & (pos <= np.asarray(extent) + 0.5 * config.pixel_size), 1)
    meta = MicrographMeta(
        zone_axis=cell.zone_axis,
        pixel_size=config.pixel_size,
        image_size=(height, width),
        probe_fwhm=config.probe_fwhm,
        repeat_length=cell.repeat_length,
        shift=(float(shift[0]), float(shift[1])),
        rotation=rotation,
        basis=basis,
        column_pixels=pos[inside][:, ::-1] / config.pixel_size,  # (K, 2) as (row, col)
        column_weights=wts[inside],
    )
    return pos, wts, meta


def simulate_micrographs(
    structures: list, config: MicrographConfig | None = None, seeds: list[int] | None = None
) -> tuple[torch.Tensor, list[MicrographMeta]]:
    """Simulate a batch of Z-contrast images.

    Args:
        structures: pymatgen Structures or (lattice (3, 3) Å, frac (N, 3), Z (N,)) tuples.
        config: Simulator settings (defaults if None).
        seeds: One seed per image; default ``config.seed + b``.

    Returns:
        images (B, H, W) float32, normalised per ``config.normalize``, and one ``MicrographMeta`` per image.
    """
    config = config or MicrographConfig()
    if config.backend == "abtem":
        _require_abtem()
    elif config.backend != "incoherent":
        raise ValueError(f"unknown backend {config.backend!r}; use 'incoherent' or 'abtem'")
    if config.pixel_size <= 0 or config.probe_fwhm <= 0:
        raise ValueError("pixel_size and probe_fwhm must be positive (Å)")
    seeds = [config.seed + b for b in range(len(structures))] if seeds is None else list(seeds)
    if len(seeds) != len(structures):
        raise ValueError(f"got {len(seeds)} seeds for {len(structures)} structures")
    geometry = [_image_geometry(s, config, seed) for s, seed in zip(structures, seeds, strict=True)]
    clean = render_columns(
        [g[0] for g in geometry],
        [g[1] for g in geometry],
        config.image_size,
        config.pixel_size,
        config.probe_fwhm,
    )  # (B, H, W)
    images = add_noise(clean, config, seeds)
    return normalize_images(images, config.normalize).float(), [g[2] for g in geometry]


def simulate_micrograph(structure, config: MicrographConfig | None = None) -> tuple[torch.Tensor, MicrographMeta]:
    """Simulate one Z-contrast image; returns the (H, W) float32 image and its metadata."""
    images, metas = simulate_micrographs([structure], config)
    return images[0], metas[0]
