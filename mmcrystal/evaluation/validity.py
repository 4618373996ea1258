"""Stage 1, validity: structural (distances, volume) and compositional (SMACT) checks of generated crystals.

Structural validity follows CDVAE (Xie et al., ICLR 2022): every interatomic distance > 0.5 Å and cell volume
> 0.1 Å^3. One deliberate difference: CDVAE reads pymatgen's ``distance_matrix``, which never compares a site with
its own periodic images, so a one-atom cell of edge 0.3 Å passes there; here a site's own images count too (the
periodic neighbour list sees them), which is what "all interatomic distances" means.

Compositional validity is CDVAE's ``smact_validity`` rule, written here from its description:

1. a single-element composition is valid (CDVAE's first short-cut; elemental solids are real materials);
2. with ``include_alloys`` (CDVAE default True), a composition made only of metals (``smact.metals``) is valid;
3. otherwise some assignment of one oxidation state per element must be charge neutral for the reduced
   stoichiometry (sum_i q_i n_i = 0), and, with ``use_pauling_test``, pass the Pauling electronegativity test:
   every cation (q > 0) must be less electronegative than every anion (q < 0).

Oxidation states default to SMACT's 2014 list (``oxidation_states_smact14``): that was ``Element.oxidation_states``
in smact 2.x, the version CDVAE/DiffCSP numbers were computed with; smact >= 3 changed the default to the ICSD-2024
list, which gives different validity rates. A missing Pauling electronegativity (noble gases) makes the
electronegativity test pass, as it did in CDVAE (the TypeError from comparing None was caught as "OK").
Intermetallics that contain a non-metal from SMACT's point of view (e.g. Si, Ge compounds with metals) fail this
rule although they are real, so real datasets fall short of 100 % (about 88-90 % on MP-20).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["ValidityConfig", "structural_validity", "smact_valid", "validity_record"]

OxidationSet = Literal["smact14", "icsd24", "icsd16", "pymatgen_sp", "wiki"]
_OX_ATTRIBUTES = {
    "smact14": "oxidation_states_smact14",
    "icsd24": "oxidation_states_icsd24",
    "icsd16": "oxidation_states_icsd16",
    "pymatgen_sp": "oxidation_states_sp",
    "wiki": "oxidation_states_wiki",
}


@dataclass(frozen=True)
class ValidityConfig:
    """Thresholds of the validity stage.

    Attributes:
        min_distance: Smallest allowed interatomic distance in Å, periodic images (own images too) included.
        min_volume: Smallest allowed cell volume in Å^3.
        oxidation_states: SMACT oxidation-state list (``smact14`` reproduces CDVAE/DiffCSP numbers).
        use_pauling_test: Apply the Pauling electronegativity test.
        include_alloys: Count all-metal compositions as valid (CDVAE default).
    """

    min_distance: float = 0.5
    min_volume: float = 0.1
    oxidation_states: OxidationSet = "smact14"
    use_pauling_test: bool = True
    include_alloys: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def structural_validity(structure, min_distance: float = 0.5, min_volume: float = 0.1) -> tuple[bool, str, float]:
    """Distance and volume check.

    Returns:
        (valid, reason, smallest distance in Å); reason is ``""`` when valid, else ``volume`` /
        ``overlap`` / ``non_finite``. The smallest distance is ``inf`` when no pair is within ``min_distance``.
    """
    lattice = np.asarray(structure.lattice.matrix, dtype=float)
    frac = np.asarray(structure.frac_coords, dtype=float)
    if not (np.isfinite(lattice).all() and np.isfinite(frac).all()):
        return False, "non_finite", math.nan
    volume = abs(float(np.linalg.det(lattice)))  # Å^3
    if not volume > min_volume:
        return False, "volume", math.nan
    # the C neighbour list sees periodic images, including a site's own images (a lone atom in a tiny cell)
    _, _, _, distances = structure.get_neighbor_list(r=min_distance, exclude_self=True)
    smallest = float(np.min(distances)) if len(distances) else math.inf
    if smallest < min_distance:
        return False, "overlap", smallest
    return True, "", smallest


@functools.lru_cache(maxsize=1)
def _metals() -> frozenset[str]:
    import smact

    return frozenset(smact.metals)


@functools.lru_cache(maxsize=512)
def _element_data(symbol: str, oxidation_states: str) -> tuple[tuple[int, ...], float | None]:
    import smact

    element = smact.Element(symbol)
    states = getattr(element, _OX_ATTRIBUTES[oxidation_states]) or []
    eneg = element.pauling_eneg
    if eneg is not None and (not isinstance(eneg, (int, float)) or math.isnan(eneg)):
        eneg = None
    return tuple(int(s) for s in states), eneg


def _neutral_reachable(options: list[tuple[int, ...]], counts: tuple[int, ...]) -> bool:
    """Can one oxidation state per element (from ``options``) make sum(q * n) zero? Subset-sum style dynamic
    programme over the reachable charge totals: linear in the number of elements, where enumerating every
    combination (as CDVAE does) grows exponentially and hangs on the 15-element compositions an untrained
    generator produces."""
    totals = {0}
    for states, n in zip(options, counts, strict=True):
        if not states:
            return False
        totals = {t + q * n for t in totals for q in states}
    return 0 in totals


@functools.lru_cache(maxsize=65536)
def _smact_valid_cached(
    symbols: tuple[str, ...], counts: tuple[int, ...], oxidation_states: str, use_pauling: bool, alloys: bool
) -> bool:
    if len(symbols) == 1:
        return True
    if alloys and all(s in _metals() for s in symbols):
        return True
    data = [_element_data(s, oxidation_states) for s in symbols]
    if any(not states for states, _ in data):
        return False
    enegs = [x for _, x in data]
    if not use_pauling or any(x is None for x in enegs):
        # CDVAE: a missing electronegativity makes the Pauling test pass (TypeError -> OK)
        return _neutral_reachable([states for states, _ in data], counts)
    # Pauling test (smact.pauling_test): every cation strictly less electronegative than every anion, i.e. some
    # threshold splits them. Try each split between distinct electronegativities: below it an element may only be
    # a cation (or 0), above it only an anion (or 0).
    levels = sorted(set(enegs))
    for split in range(len(levels) + 1):
        options = [
            tuple(q for q in states if (q >= 0 if x in levels[:split] else q <= 0))
            for (states, _), x in zip(data, enegs, strict=True)
        ]
        if _neutral_reachable(options, counts):
            return True
    return False


def smact_valid(composition, config: ValidityConfig | None = None) -> bool:
    """SMACT charge-neutrality + electronegativity rule (module docstring) for a pymatgen Composition or formula."""
    from pymatgen.core import Composition

    cfg = config or ValidityConfig()
    comp = Composition(composition) if isinstance(composition, str) else composition
    amounts = {el.symbol: amt for el, amt in comp.element_composition.items() if amt > 0}
    if not amounts:
        return False
    if any(abs(a - round(a)) > 1e-6 for a in amounts.values()):
        return False  # fractional occupancies have no integer stoichiometry
    symbols = tuple(sorted(amounts))
    counts = np.array([round(amounts[s]) for s in symbols], dtype=int)
    counts = counts // np.gcd.reduce(counts)  # reduced stoichiometry, as CDVAE
    return _smact_valid_cached(
        symbols, tuple(int(c) for c in counts), cfg.oxidation_states, cfg.use_pauling_test, cfg.include_alloys
    )


def validity_record(structure, config: ValidityConfig | None = None) -> dict[str, Any]:
    """Per-structure validity columns: ``struct_valid``, ``comp_valid``, ``valid``, ``invalid_reason``,
    ``min_distance`` (Å, only when below the threshold, else inf)."""
    cfg = config or ValidityConfig()
    struct_ok, reason, smallest = structural_validity(structure, cfg.min_distance, cfg.min_volume)
    try:
        comp_ok = smact_valid(structure.composition, cfg)
    except Exception as exc:  # noqa: BLE001 - an element SMACT does not know is an invalid composition
        comp_ok, reason = False, reason or f"smact: {type(exc).__name__}"
    if struct_ok and not comp_ok:
        reason = "smact"
    return {
        "struct_valid": bool(struct_ok),
        "comp_valid": bool(comp_ok),
        "valid": bool(struct_ok and comp_ok),
        "invalid_reason": reason,
        "min_distance": smallest,
    }
