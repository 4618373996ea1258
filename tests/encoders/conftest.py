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


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run encoder tests on one intra-op thread, restoring the setting afterwards.

    On the shared 2-core machines, two torch threads competing with other processes made small ops 10-50x
    slower (measured: the neighbour search of 16 MP-20 cells took 13 ms on one thread, 0.5 s on two).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
