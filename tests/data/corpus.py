"""A malformed-input corpus built in code: each entry is one kind of bad record, with the reason it must get."""

from __future__ import annotations

import json
import math

from pymatgen.core import Lattice, Structure

GOOD = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
GOOD_CIF = GOOD.to(fmt="cif")


def cif_with(**replace: str) -> str:
    text = GOOD_CIF
    for old, new in replace.items():
        text = text.replace(old.replace("_", " ") if old.startswith("site") else old, new)
    return text


def partial_occupancy_cif() -> str:
    return GOOD_CIF.replace("Na  Na0  1  0.00000000  0.00000000  0.00000000  1", "Na  Na0  1  0.0  0.0  0.0  0.6")


def close_atoms_cif() -> str:
    return GOOD_CIF.replace("0.50000000  0.50000000  0.50000000", "0.02000000  0.00000000  0.00000000")


def unknown_element_cif() -> str:
    return GOOD_CIF.replace("Na  Na0", "Xx  Xx0")


def tiny_cell_cif() -> str:
    """One atom in a 0.48 x 3 x 3 Å cell (volume fine): it overlaps its own periodic image along a."""
    single = Structure(Lattice.orthorhombic(0.48, 3, 3), ["Fe"], [[0, 0, 0]])
    return single.to(fmt="cif")


def big_cell_cif(n: int = 30) -> str:
    return (GOOD * (n, 1, 1)).to(fmt="cif")


def flat_lattice_dict() -> dict:
    d = GOOD.as_dict()
    d["lattice"]["matrix"] = [[4.0, 0, 0], [8.0, 0, 0], [0, 0, 4.0]]  # a and b collinear: zero volume
    return d


def nan_coords_dict() -> dict:
    d = GOOD.as_dict()
    d["sites"][1]["abc"] = [math.nan, 0.5, 0.5]
    return d


# CSV rows: (id, cif, band_gap, prompt) -> expected reason (None = accepted)
CSV_ROWS = [
    ("good-1", GOOD_CIF, 1.0, "rock salt NaCl", None),
    ("bad-cif", "data_broken\n_cell_length_a 4\nthis is not a cif", 1.0, "x", "unparsable_structure"),
    ("partial", partial_occupancy_cif(), 1.0, "x", "partial_occupancy"),
    ("close", close_atoms_cif(), 1.0, "x", "atoms_too_close"),
    ("xx", unknown_element_cif(), 1.0, "x", "unknown_element"),
    ("tiny", tiny_cell_cif(), 1.0, "x", "atoms_too_close"),
    ("big", big_cell_cif(), 1.0, "x", "too_many_atoms"),
    ("good-1", GOOD_CIF, 1.0, "duplicate of the first", "duplicate_id"),
    ("", GOOD_CIF, 1.0, "no id", "missing_id"),
    ("no-caption", GOOD_CIF, 1.0, "", "empty_caption"),
    ("empty-cif", "", 1.0, "x", "unparsable_structure"),
    ("nan-gap", GOOD_CIF, math.nan, "NaCl with unknown gap", None),  # NaN property dropped, record kept
    ("good-2", GOOD_CIF, 2.0, "['first caption', 'second caption']", None),
]

# JSON lines: (text of the line) -> expected reason
JSONL_LINES = [
    (json.dumps({"id": "j-good", "structure": GOOD.as_dict(), "properties": {"e": -1.0}}), None),
    ('{"id": "j-broken", "structure": ', "malformed_record"),
    (json.dumps({"id": "j-flat", "structure": flat_lattice_dict()}), "non_positive_volume"),
    (json.dumps({"id": "j-nan", "structure": nan_coords_dict()}), "non_finite"),
    (json.dumps({"id": "j-type", "structure": 42}), "malformed_record"),
    (json.dumps({"id": "j-nostruct", "foo": 1}), "malformed_record"),
    (json.dumps([1, 2, 3]), "malformed_record"),
    (json.dumps({"id": "j-empty", "structure": {**GOOD.as_dict(), "sites": []}}), "empty_structure"),
]
