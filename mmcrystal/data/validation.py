"""Turn raw records into validated crystals, or into a named rejection.

Every check has a stable reason code (`REASONS`) so that ``rejects.jsonl`` can be counted and filtered. Nothing
here raises for a bad record: `validate_record` returns either a `CrystalRecord` or a `Rejection`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmcrystal.data.record import CrystalRecord, RawRecord, Rejection

__all__ = ["ValidationConfig", "REASONS", "validate_record", "parse_structure"]

# reason code -> one-line meaning (documented in the README's data section).
REASONS: dict[str, str] = {
    "missing_id": "the record has no id",
    "duplicate_id": "another record of the same source set already used this id",
    "excluded_id": "the id is on an exclude list (PrepareConfig.exclude: a benchmark's held-out test ids)",
    "malformed_record": "the reader could not decode the record (bad JSON line, wrong field types)",
    "unparsable_structure": "the CIF / structure payload could not be parsed",
    "unknown_element": "a site holds a symbol that is not a chemical element (dummy species, typo)",
    "partial_occupancy": "disordered sites (fractional occupancy); set ordering='majority' to keep them",
    "empty_structure": "the structure has no sites",
    "too_many_atoms": "more sites than max_atoms",
    "non_finite": "NaN or infinite lattice parameters or coordinates",
    "non_positive_volume": "cell volume <= min_volume (degenerate or left-handed-collapsed lattice)",
    "atoms_too_close": "two sites (possibly periodic images) are closer than min_distance",
    "non_finite_property": "a property is NaN or infinite (set drop_nonfinite_properties to keep the record)",
    "empty_caption": "the source has a caption column but this record's caption is empty",
}


@dataclass
class ValidationConfig:
    """What a record must satisfy to enter a shard.

    Attributes:
        max_atoms: Largest number of sites per cell that is kept.
        min_distance: Smallest allowed interatomic distance in Å, periodic images included (CDVAE's structural
            validity uses 0.5 Å).
        min_volume: Smallest allowed cell volume in Å^3.
        ordering: What to do with partial occupancy: ``reject`` (default) or ``majority`` (each disordered site
            becomes its majority species; a site whose total occupancy is below 0.5 is removed).
        drop_nonfinite_properties: If True, a NaN/inf property is removed from the record (and the record kept);
            if False the record is rejected.
        require_captions: If True, a record without any caption is rejected even when the source has no
            caption column.
    """

    max_atoms: int = 200
    min_distance: float = 0.5
    min_volume: float = 0.1
    ordering: Literal["reject", "majority"] = "reject"
    drop_nonfinite_properties: bool = True
    require_captions: bool = False


def parse_structure(raw: RawRecord):
    """Build a pymatgen Structure from whatever payload the reader found. Raises on failure."""
    from pymatgen.core import Structure

    if raw.structure is not None:
        return raw.structure
    if raw.structure_dict is not None:
        return Structure.from_dict(raw.structure_dict)
    if raw.cif is not None:
        with warnings.catch_warnings():
            # pymatgen warns for every CIF whose coordinates it rounds to ideal values; that is normal here.
            warnings.simplefilter("ignore")
            return Structure.from_str(raw.cif, fmt="cif")
    raise ValueError("record carries no structure payload")


def _order_majority(structure):
    """Replace every disordered site by its majority species; drop sites that are mostly vacancy."""
    from pymatgen.core import Structure

    species, coords = [], []
    for site in structure:
        occupancy = site.species
        if occupancy.num_atoms < 0.5:
            continue
        element, _ = max(occupancy.items(), key=lambda kv: kv[1])
        species.append(element)
        coords.append(site.frac_coords)
    return Structure(structure.lattice, species, coords)


def _check_species(structure) -> str | None:
    from pymatgen.core import Element

    for site in structure:
        for sp in site.species:
            symbol = getattr(sp, "symbol", str(sp))
            if not Element.is_valid_symbol(symbol) or getattr(sp, "Z", 0) in (0, None):
                return f"site species {sp!s} is not an element"
    return None


def _check_geometry(structure, cfg: ValidationConfig) -> tuple[str, str] | None:
    lattice = np.asarray(structure.lattice.matrix, dtype=float)
    frac = np.asarray(structure.frac_coords, dtype=float)
    if not (np.isfinite(lattice).all() and np.isfinite(frac).all()):
        return "non_finite", "lattice or fractional coordinates contain NaN/inf"
    volume = float(np.linalg.det(lattice))
    if not volume > cfg.min_volume:
        return "non_positive_volume", f"cell volume {volume:.4g} Å^3 <= {cfg.min_volume}"
    # C-backed periodic neighbour search: fast (~0.1 ms for 20 atoms) and it sees periodic images, so a lone atom
    # in a too-small cell is caught against its own image.
    centers, points, _, distances = structure.get_neighbor_list(r=cfg.min_distance)
    if len(distances) and float(np.min(distances)) < cfg.min_distance:
        k = int(np.argmin(distances))
        return "atoms_too_close", (
            f"sites {int(centers[k])} and {int(points[k])} are {float(distances[k]):.3f} Å apart "
            f"(< {cfg.min_distance} Å)"
        )
    return None


def _clean_properties(raw: RawRecord, cfg: ValidationConfig) -> tuple[dict[str, float], Rejection | None]:
    props: dict[str, float] = {}
    for name, value in raw.properties.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value):
            props[name] = value
        elif not cfg.drop_nonfinite_properties:
            return props, Rejection(raw.id, raw.location, "non_finite_property", f"property {name!r} = {value}")
    return props, None


def validate_record(raw: RawRecord, cfg: ValidationConfig, split: str = "") -> CrystalRecord | Rejection:
    """Parse and check one record.

    Args:
        raw: The record as read.
        cfg: Validation thresholds and options.
        split: Split name, copied into the result.

    Returns:
        A `CrystalRecord` when every check passes, else a `Rejection` naming the first failed check.
    """

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(raw.id, raw.location, reason, detail, split)

    if raw.error is not None:
        return reject(*raw.error)
    if not raw.id or not str(raw.id).strip():
        return reject("missing_id", "empty id")
    if raw.captions is not None and not [c for c in raw.captions if c and c.strip()]:
        return reject("empty_caption", "caption column is empty for this record")
    if cfg.require_captions and not raw.captions:
        return reject("empty_caption", "no caption and require_captions=True")
    if raw.structure_dict is not None and not raw.structure_dict.get("sites"):
        return reject("empty_structure", "structure has no sites")
    try:
        structure = parse_structure(raw)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a rejection, never a crash
        reason = "unknown_element" if "element" in str(exc).lower() else "unparsable_structure"
        return reject(reason, f"{type(exc).__name__}: {str(exc)[:200]}")
    if len(structure) == 0:
        return reject("empty_structure", "no sites")
    bad_species = _check_species(structure)
    if bad_species:
        return reject("unknown_element", bad_species)
    if not structure.is_ordered:
        if cfg.ordering == "reject":
            n_disordered = sum(1 for site in structure if not site.is_ordered)
            return reject("partial_occupancy", f"{n_disordered} disordered site(s)")
        structure = _order_majority(structure)
        if len(structure) == 0:
            return reject("empty_structure", "no sites left after ordering")
    if len(structure) > cfg.max_atoms:
        return reject("too_many_atoms", f"{len(structure)} sites > max_atoms={cfg.max_atoms}")
    geometry = _check_geometry(structure, cfg)
    if geometry:
        return reject(*geometry)
    props, prop_rejection = _clean_properties(raw, cfg)
    if prop_rejection is not None:
        return Rejection(raw.id, raw.location, prop_rejection.reason, prop_rejection.detail, split)
    captions = [c.strip() for c in (raw.captions or []) if c and c.strip()]
    return CrystalRecord(str(raw.id), structure, props, captions, split, raw.location)
