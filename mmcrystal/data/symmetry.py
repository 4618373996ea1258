"""Space group and crystal system of every prepared record (spglib through pymatgen), stored in the shard meta.

Zero-shot crystal-system classification, captions and space-group conditioning all read these labels, so they are
computed once at prepare time (about 1.2 ms per MP-20 structure) with a recorded tolerance.
"""

from __future__ import annotations

import logging

from mmcrystal.data.record import CrystalRecord

__all__ = ["CRYSTAL_SYSTEMS", "annotate_symmetry", "crystal_system_index"]

log = logging.getLogger(__name__)

# Order used for class indices everywhere (zero-shot labels, batch.crystal_system).
CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")


def crystal_system_index(name: str | None) -> int:
    """Index into `CRYSTAL_SYSTEMS`, or -1 when unknown."""
    return CRYSTAL_SYSTEMS.index(name) if name in CRYSTAL_SYSTEMS else -1


def annotate_symmetry(records: list[CrystalRecord], symprec: float = 0.1, angle_tolerance: float = 5.0) -> int:
    """Fill ``record.symmetry`` in place; returns how many structures spglib could not analyse (left empty)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    failures = 0
    for record in records:
        try:
            analyzer = SpacegroupAnalyzer(record.structure, symprec=symprec, angle_tolerance=angle_tolerance)
            record.symmetry = {
                "spacegroup": int(analyzer.get_space_group_number()),
                "symbol": analyzer.get_space_group_symbol(),
                "crystal_system": analyzer.get_crystal_system(),
                "lattice_type": analyzer.get_lattice_type(),
                "symprec": symprec,
            }
        except Exception as exc:  # noqa: BLE001 - spglib failures are counted and logged, never fatal
            failures += 1
            log.warning("symmetry: %s (%s): spglib failed: %s", record.id, record.location, exc)
    return failures
