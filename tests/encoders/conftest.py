"""Fixtures for the encoder tests: pymatgen structures -> the crystal input contract."""

from __future__ import annotations

import pytest
import torch

from encoders.crystal import CrystalGraphInput


def structures_to_input(structures, dtype: torch.dtype = torch.float64) -> CrystalGraphInput:
    """Batch pymatgen structures as a `CrystalGraphInput` (frac coords as stored, lattice rows in Å)."""
    return CrystalGraphInput.from_crystals(
        [(s.atomic_numbers, s.frac_coords, s.lattice.matrix) for s in structures], dtype=dtype
    )


@pytest.fixture(scope="session")
def to_crystal_input():
    """The `structures_to_input` converter (fixtures are how test modules share helpers here)."""
    return structures_to_input
