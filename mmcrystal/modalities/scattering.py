"""Reflections, atomic scattering factors and structure factors for the powder-XRD simulator (torch, batched).

Atomic scattering factors use the parametrisation of pymatgen's ``XRDCalculator`` so that simulated patterns
agree with it: the X-ray form factor comes from a four-Gaussian fit of the *electron* scattering factor through
the Mott-Bethe formula,

    f_x(s) = Z - 8 pi^2 a_0 s^2 * sum_i a_i exp(-b_i s^2),    s = sin(theta) / lambda  (1/Å),

with 8 pi^2 a_0 = 41.78214 Å (a_0 the Bohr radius); see De Graef & McHenry, *Structure of Materials* (Cambridge,
2007), ch. 11-12, which pymatgen's implementation follows. The coefficients (a_i, b_i) are the facts tabulated in
pymatgen's ``pymatgen/analysis/diffraction/atomic_scattering_params.json`` (99 elements, H-Cf); their
four-Gaussian form is that of Doyle & Turner, Acta Cryst. A24, 390 (1968). pymatgen does not state the table's
origin in code, so the installed JSON is read at runtime rather than re-tabulated; set
``MMCRYSTAL_SCATTERING_PARAMS`` to a copy of it where pymatgen is not installed (e.g. a GPU node).

Structure factor of reflection G = h a* + k b* + l c* (reciprocal rows of inv(L)^T, 1/Å, no 2 pi):
F(G) = sum_j w_j f_j(s) exp(-B_j s^2) exp(2 pi i h . x_j) with s = |G| / 2 and w_j the site occupancy.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

# 8 pi^2 a_0 in Å (Mott-Bethe prefactor), as in De Graef & McHenry and pymatgen.
MOTT_BETHE_PREFACTOR = 41.78214

# Characteristic X-ray wavelengths in Å; names and values as in pymatgen.analysis.diffraction.xrd.WAVELENGTHS
# ("Ka" is the intensity-weighted mean of Ka1 and Ka2).
WAVELENGTHS: dict[str, float] = {
    "CuKa": 1.54184,
    "CuKa2": 1.54439,
    "CuKa1": 1.54056,
    "CuKb1": 1.39222,
    "MoKa": 0.71073,
    "MoKa2": 0.71359,
    "MoKa1": 0.70930,
    "MoKb1": 0.63229,
    "CrKa": 2.29100,
    "CrKa2": 2.29361,
    "CrKa1": 2.28970,
    "CrKb1": 2.08487,
    "FeKa": 1.93735,
    "FeKa2": 1.93998,
    "FeKa1": 1.93604,
    "FeKb1": 1.75661,
    "CoKa": 1.79026,
    "CoKa2": 1.79285,
    "CoKa1": 1.78896,
    "CoKb1": 1.63079,
    "AgKa": 0.560885,
    "AgKa2": 0.563813,
    "AgKa1": 0.559421,
    "AgKb1": 0.497082,
}

# Element symbols in order of atomic number (index 0 is a placeholder so that SYMBOLS[Z] is element Z).
_SYMBOL_TEXT = """X
H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr
Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu
Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr
Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"""
SYMBOLS: tuple[str, ...] = tuple(_SYMBOL_TEXT.split())
MAX_Z = len(SYMBOLS) - 1  # 118
_Z_OF = {sym: z for z, sym in enumerate(SYMBOLS) if z > 0}
_Z_OF["D"] = 1  # deuterium scatters X-rays like hydrogen
_Z_OF["T"] = 1


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol (``"Fe"`` -> 26); D and T map to 1."""
    try:
        return _Z_OF[symbol]
    except KeyError:
        raise ValueError(f"unknown element symbol {symbol!r}") from None


def wavelength_angstrom(wavelength: str | float) -> float:
    """Wavelength in Å from a name in ``WAVELENGTHS`` (``"CuKa"``, ``"MoKa1"``, ...) or a number in Å."""
    if isinstance(wavelength, str):
        if wavelength not in WAVELENGTHS:
            raise ValueError(f"unknown radiation {wavelength!r}; expected one of {sorted(WAVELENGTHS)} or Å")
        return WAVELENGTHS[wavelength]
    value = float(wavelength)
    if not value > 0:
        raise ValueError(f"wavelength must be positive (Å), got {wavelength!r}")
    return value


def _params_path() -> Path:
    override = os.environ.get("MMCRYSTAL_SCATTERING_PARAMS")
    if override:
        return Path(override)
    # find_spec on a top-level package locates it without importing pymatgen (cheap).
    spec = importlib.util.find_spec("pymatgen")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "pymatgen is not installed; set MMCRYSTAL_SCATTERING_PARAMS to a copy of its "
            "analysis/diffraction/atomic_scattering_params.json"
        )
    return Path(spec.submodule_search_locations[0]) / "analysis" / "diffraction" / "atomic_scattering_params.json"


@functools.lru_cache(maxsize=1)
def load_scattering_params() -> dict[str, list[list[float]]]:
    """The coefficient table ``{symbol: [[a_1, b_1], ..., [a_4, b_4]]}`` (a dimensionless, b in Å^2)."""
    path = _params_path()
    with open(path) as handle:
        return json.load(handle)


@functools.lru_cache(maxsize=8)
def _table_cpu(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    params = load_scattering_params()
    n_terms = max(len(v) for v in params.values())
    a = torch.zeros(MAX_Z + 1, n_terms, dtype=dtype)
    b = torch.zeros(MAX_Z + 1, n_terms, dtype=dtype)
    known = torch.zeros(MAX_Z + 1, dtype=torch.bool)
    for symbol, coeffs in params.items():
        if symbol not in _Z_OF or symbol in ("D", "T"):
            continue
        z = _Z_OF[symbol]
        for i, (ai, bi) in enumerate(coeffs):
            a[z, i], b[z, i] = ai, bi
        known[z] = True
    return a, b, known


def scattering_table(
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coefficient tensors indexed by atomic number.

    Returns:
        ``(a, b, known)``: ``a`` and ``b`` of shape (119, n_terms) (zeros where a fit has fewer terms or the
        element has no entry) and ``known`` (119,) bool, True where the table has the element.
    """
    a, b, known = _table_cpu(dtype)
    return a.to(device), b.to(device), known.to(device)


def form_factor(z: torch.Tensor, s2: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """X-ray atomic scattering factor f(s) by the Mott-Bethe formula (module docstring).

    Args:
        z: atomic numbers as floats, broadcastable against ``s2``, e.g. (R, E).
        s2: s^2 = (sin(theta) / lambda)^2 in 1/Å^2, e.g. (R, 1).
        a: Gaussian amplitudes, shape ``z.shape + (n_terms,)`` after broadcasting, e.g. (R, E, 4).
        b: Gaussian widths in Å^2, same shape as ``a``.

    Returns:
        f(s) in electrons, broadcast shape of ``z`` and ``s2``.
    """
    gauss = (a * torch.exp(-b * s2.unsqueeze(-1))).sum(-1)  # (R, E)
    return z - MOTT_BETHE_PREFACTOR * s2 * gauss


def enumerate_hkl(lattice: torch.Tensor, g_min: float, g_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-space reciprocal-lattice points with g_min <= |G| <= g_max of every crystal, without gradients.

    Half space: h > 0, or h = 0 and k > 0, or h = k = 0 and l > 0 (one of each Friedel pair, origin excluded).
    |h| <= |G| |a| because h = G . a, so |h| <= floor(g_max |a|) (likewise k). For every (h, k) of that box the l
    with |G| <= g_max form an interval, the roots of a quadratic in l, so only points on (or one step beyond) the
    sphere are generated, flat over all crystals with no Python loop; an exact |G| test then picks the points.

    Args:
        lattice: (B, 3, 3) rows are lattice vectors, Å.
        g_min: smallest |G|, 1/Å.
        g_max: largest |G|, 1/Å.

    Returns:
        ``(hkl, crystal)``: (R, 3) long Miller indices and (R,) long crystal index, crystal-major.
    """
    lat = lattice.detach().to(torch.float64)  # the discrete choice is made in float64 whatever the model dtype
    recip = torch.linalg.inv(lat).transpose(-1, -2)  # (B, 3, 3) rows a*, b*, c*, 1/Å
    metric = (recip @ recip.transpose(-1, -2)).reshape(-1, 9)  # (B, 9) reciprocal metric tensor
    bound = torch.floor(g_max * lat.norm(dim=-1) + 1e-6).long()  # (B, 3) |h|, |k|, |l| bounds
    n_k = 2 * bound[:, 1] + 1
    crystal = torch.repeat_interleave(torch.arange(len(lat), device=lat.device), (bound[:, 0] + 1) * n_k)
    local = torch.arange(crystal.numel(), device=lat.device) - _offsets((bound[:, 0] + 1) * n_k)[crystal]
    h = local // n_k[crystal]  # (P,) (h, k) pairs
    k = local % n_k[crystal] - bound[crystal, 1]
    m = metric.index_select(0, crystal)  # (P, 9)
    hf, kf = h.to(lat.dtype), k.to(lat.dtype)
    # |G|^2(l) = m22 l^2 + 2 l (m02 h + m12 k) + (m00 h^2 + 2 m01 h k + m11 k^2)
    lin = m[:, 2] * hf + m[:, 5] * kf
    const = m[:, 0] * hf**2 + 2.0 * m[:, 1] * hf * kf + m[:, 4] * kf**2
    disc = lin**2 - m[:, 8] * (const - g_max**2)
    root = torch.sqrt(disc.clamp(min=0.0))
    l_lo = torch.ceil((-lin - root) / m[:, 8] - 1e-6).long()  # slack: the exact test below decides
    l_hi = torch.floor((-lin + root) / m[:, 8] + 1e-6).long()
    l_lo = torch.where((h == 0) & (k == 0), l_lo.clamp(min=1), l_lo)
    count = torch.where((h > 0) | (k >= 0), (l_hi - l_lo + 1).clamp(min=0), 0)  # (P,) l values per pair
    pair = torch.repeat_interleave(torch.arange(len(h), device=lat.device), count)  # (R',)
    l_idx = l_lo[pair] + torch.arange(pair.numel(), device=lat.device) - _offsets(count)[pair]
    hkl = torch.stack([h[pair], k[pair], l_idx], dim=-1)  # (R', 3)
    crystal = crystal[pair]
    g2 = _g_squared(hkl.to(lat.dtype), metric.index_select(0, crystal))
    keep = (g2 <= g_max**2) & (g2 >= g_min**2)
    return hkl[keep], crystal[keep]


def _offsets(counts: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum: start of each segment of a ragged layout."""
    return torch.cumsum(counts, 0) - counts


def _g_squared(h: torch.Tensor, metric: torch.Tensor) -> torch.Tensor:
    """|G|^2 = h^T M* h in 1/Å^2 for (R, 3) indices and (R, 9) flattened reciprocal metric tensors."""
    return (h[:, None, :] * h[:, :, None] * metric.view(-1, 3, 3)).sum((-1, -2))


@dataclass
class PaddedAtoms:
    """Atoms of a flat crystal batch padded per crystal and grouped by element ("slots").

    Attributes:
        frac: (B, 3, A) fractional coordinates, coordinate-major so each component is a contiguous (B, A) block.
        weight: (B, A) occupancy, 0 on padding.
        slot: (B, A) long, index of the atom's element among its crystal's distinct elements.
        slot_z: (B, E) long atomic number of each slot (0 on padding).
    """

    frac: torch.Tensor
    weight: torch.Tensor
    slot: torch.Tensor
    slot_z: torch.Tensor

    def truncate(self, n_atoms: int) -> PaddedAtoms:
        """The first ``n_atoms`` padded atoms of every crystal, as contiguous tensors (fast row gathers)."""
        return PaddedAtoms(
            self.frac[:, :, :n_atoms].contiguous(),
            self.weight[:, :n_atoms].contiguous(),
            self.slot[:, :n_atoms].contiguous(),
            self.slot_z,
        )


def pad_atoms(frac: torch.Tensor, numbers: torch.Tensor, num_atoms: torch.Tensor, weights: torch.Tensor) -> PaddedAtoms:
    """Scatter flat atoms (N,) into (B, A) padding (differentiable in ``frac``) and number their elements."""
    n_cryst, device = num_atoms.numel(), frac.device
    batch = torch.repeat_interleave(torch.arange(n_cryst, device=device), num_atoms)  # (N,)
    pos = torch.arange(batch.numel(), device=device) - _offsets(num_atoms)[batch]
    n_max = max(int(num_atoms.max()), 1) if n_cryst else 1
    pad_frac = frac.new_zeros(n_cryst, n_max, 3).index_put((batch, pos), frac).transpose(1, 2).contiguous()
    pad_w = frac.new_zeros(n_cryst, n_max).index_put((batch, pos), weights.to(frac.dtype))
    # Slots: unique (crystal, Z) pairs, sorted crystal-major, numbered from 0 within each crystal.
    uniq, inverse = torch.unique(batch * (MAX_Z + 1) + numbers, return_inverse=True)
    uniq_crystal = uniq // (MAX_Z + 1)
    first = torch.searchsorted(uniq_crystal, torch.arange(n_cryst, device=device))  # (B,)
    local = torch.arange(uniq.numel(), device=device) - first[uniq_crystal]  # (U,)
    n_slots = int(local.max()) + 1 if uniq.numel() else 1
    slot_z = torch.zeros(n_cryst, n_slots, dtype=torch.long, device=device)
    slot_z[uniq_crystal, local] = uniq % (MAX_Z + 1)
    pad_slot = torch.zeros(n_cryst, n_max, dtype=torch.long, device=device)
    pad_slot[batch, pos] = local[inverse]
    return PaddedAtoms(pad_frac, pad_w, pad_slot, slot_z)


def structure_factor_sq(
    hkl: torch.Tensor,
    crystal: torch.Tensor,
    recip: torch.Tensor,
    atoms: PaddedAtoms,
    dw_table: torch.Tensor | None = None,
    n_atoms: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """|G|^2 and |F(G)|^2 of ragged reflections (module docstring), differentiable in ``recip`` and ``atoms.frac``.

    Args:
        hkl: (R, 3) long Miller indices; crystal: (R,) long crystal of each reflection.
        recip: (B, 3, 3) rows a*, b*, c* (1/Å), i.e. inv(lattice)^T.
        atoms: padded atoms of the batch.
        dw_table: optional (119,) isotropic Debye-Waller B (Å^2) by atomic number.
        n_atoms: use only the first ``n_atoms`` padded atoms (all crystals of ``crystal`` have at most that many).

    Returns:
        ``(g2, f_sq)``: (R,) |G|^2 in 1/Å^2 and (R,) |F|^2 in electrons^2.
    """
    dtype = recip.dtype
    h = hkl.to(dtype)
    rc = recip.reshape(-1, 9).index_select(0, crystal)  # (R, 9)
    g_vec = h[:, 0:1] * rc[:, 0:3] + h[:, 1:2] * rc[:, 3:6] + h[:, 2:3] * rc[:, 6:9]  # (R, 3) 1/Å
    g2 = (g_vec * g_vec).sum(-1)  # (R,)
    s2 = (g2 / 4.0)[:, None]  # (R, 1) (sin(theta) / lambda)^2, 1/Å^2
    a_tab, b_tab, _ = scattering_table(recip.device, dtype)
    n_slots = atoms.slot_z.shape[1]
    a = a_tab[atoms.slot_z].flatten(1).index_select(0, crystal).view(len(h), n_slots, -1)  # (R, E, n)
    b = b_tab[atoms.slot_z].flatten(1).index_select(0, crystal).view(len(h), n_slots, -1)
    z = atoms.slot_z.to(dtype).index_select(0, crystal)  # (R, E)
    f_slot = form_factor(z, s2, a, b)  # (R, E) electrons
    if dw_table is not None:
        f_slot = f_slot * torch.exp(-dw_table[atoms.slot_z].index_select(0, crystal) * s2)
    if n_atoms is not None and n_atoms < atoms.weight.shape[1]:
        atoms = atoms.truncate(n_atoms)
    slot, weight = atoms.slot.index_select(0, crystal), atoms.weight.index_select(0, crystal)
    f_atom = f_slot.gather(1, slot) * weight  # (R, A)
    frac = atoms.frac.index_select(0, crystal)  # (R, 3, A)
    h = h * (2.0 * math.pi)
    phase = torch.addcmul(torch.addcmul(frac[:, 0] * h[:, 0:1], frac[:, 1], h[:, 1:2]), frac[:, 2], h[:, 2:3])
    f_re = (f_atom * torch.cos(phase)).sum(-1)  # (R,) phase = 2 pi h . x, (R, A) radians
    f_im = (f_atom * torch.sin(phase)).sum(-1)
    return g2, f_re**2 + f_im**2


def structure_factors(
    hkl: torch.Tensor,
    crystal: torch.Tensor,
    recip: torch.Tensor,
    atoms: PaddedAtoms,
    num_atoms: torch.Tensor,
    dw_table: torch.Tensor | None = None,
    chunk_elements: int = 2**22,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``structure_factor_sq`` over many reflections, in chunks and without paying for atom padding.

    Reflections are grouped by the atom count of their crystal, rounded up to a multiple of 4 (of 8 above 31 atoms,
    of 16 above 63, ...), and each group runs with that many padded atoms: padding every cell to the largest would
    double the (R, A) work on MP-20 (1-20 atoms), while one group per exact count would multiply small kernel
    launches. Groups are cut into pieces of at most ``chunk_elements`` (reflection, coordinate, atom) entries.

    Returns:
        ``(g2, f_sq)``, each (R,), in the order of ``hkl``.
    """
    n = num_atoms.clamp(min=1)
    quantum = torch.exp2((torch.floor(torch.log2(n.double())) - 2).clamp(min=2)).long()  # (B,) 4, 8, 16, ...
    bucket = torch.minimum((n + quantum - 1) // quantum * quantum, n.max())  # (B,) padded atom count
    count = bucket.index_select(0, crystal)  # (R,)
    order = torch.argsort(count, stable=True)
    values, sizes = torch.unique_consecutive(count[order], return_counts=True)
    g2_parts, f_parts, start = [], [], 0
    for n_atoms, size in zip(values.tolist(), sizes.tolist(), strict=True):
        rows = max(1, chunk_elements // (3 * n_atoms))
        group_atoms = atoms.truncate(n_atoms)
        for i in range(start, start + size, rows):
            idx = order[i : min(i + rows, start + size)]
            g2, f_sq = structure_factor_sq(hkl[idx], crystal[idx], recip, group_atoms, dw_table)
            g2_parts.append(g2)
            f_parts.append(f_sq)
        start += size
    if not g2_parts:
        empty = recip.new_zeros(0)
        return empty, empty
    # Back to the order of hkl (index_copy is differentiable in the copied values).
    g2 = recip.new_zeros(len(hkl)).index_copy(0, order, torch.cat(g2_parts))
    f_sq = recip.new_zeros(len(hkl)).index_copy(0, order, torch.cat(f_parts))
    return g2, f_sq
