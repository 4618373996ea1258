"""Small constructed crystals for the evaluation tests (pymatgen, made in code). Imported by name, so the name
is unique across the test tree."""

from __future__ import annotations

import pandas as pd
from pymatgen.core import Lattice, Structure


def rocksalt(a: float = 5.69, cation: str = "Na", anion: str = "Cl") -> Structure:
    """Conventional rock-salt cell (8 atoms), lattice constant a in Å."""
    fcc = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    anions = [[(x + 0.5) % 1.0, y, z] for x, y, z in fcc]
    return Structure(Lattice.cubic(a), [cation] * 4 + [anion] * 4, fcc + anions)


def cesium_chloride(a: float = 3.4, cation: str = "Na", anion: str = "Cl") -> Structure:
    """CsCl-type cell (2 atoms): a higher-energy polymorph of NaCl."""
    return Structure(Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def bcc_sodium(a: float = 4.23) -> Structure:
    return Structure(Lattice.cubic(a), ["Na", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def chlorine_crystal() -> Structure:
    """Molecular Cl2 crystal (orthorhombic, Cmca-like, 4 atoms): a crude elemental Cl reference."""
    return Structure(
        Lattice.orthorhombic(6.24, 4.48, 8.26),
        ["Cl"] * 4,
        [[0, 0.1, 0.1], [0, 0.9, 0.9], [0.5, 0.6, 0.4], [0.5, 0.4, 0.6]],
    )


def write_csv(path, structures: dict[str, Structure]) -> str:
    """CDVAE-style table (material_id, cif) of named structures; returns the path."""
    frame = pd.DataFrame({"material_id": list(structures), "cif": [s.to(fmt="cif") for s in structures.values()]})
    frame.to_csv(path, index=False)
    return str(path)


class VolumePerAtomModel:
    """Evaluation-only toy property model: volume per atom (Å^3), fixed uncertainty."""

    def predict(self, structures):
        import numpy as np

        mean = np.array([s.volume / len(s) for s in structures])
        return mean, np.full(len(structures), 0.1)
