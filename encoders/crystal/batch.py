"""The crystal input contract and index helpers shared by the crystal encoders.

Crystal encoders read five attributes from whatever batch object they are given (duck typing), so the lead's
`mmcrystal.data.CrystalBatch` is passed directly and `encoders` never imports `mmcrystal`. `CrystalGraphInput`
is a minimal stand-alone implementation of the same contract for tests and scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np
import torch

from encoders.layers.scatter import exclusive_cumsum


class CrystalLike(Protocol):
    """Anything with the five crystal batch attributes (see `CrystalGraphInput`)."""

    atomic_numbers: torch.Tensor
    frac_coords: torch.Tensor
    lattice: torch.Tensor
    num_atoms: torch.Tensor
    batch: torch.Tensor


@dataclass
class CrystalGraphInput:
    """A batch of B crystals with N atoms in total, stored flat.

    Attributes:
        atomic_numbers: `(N,)` long, atomic number Z of each atom.
        frac_coords: `(N, 3)` float, fractional coordinates; any real values (encoders wrap or use periodic
            features, so f and f + 1 are the same site).
        lattice: `(B, 3, 3)` float, ROWS are the lattice vectors a, b, c in Å (pymatgen convention:
            cartesian = frac @ lattice).
        num_atoms: `(B,)` long, atoms per crystal.
        batch: `(N,)` long, crystal index of each atom; sorted, so each crystal's atoms are contiguous.
    """

    atomic_numbers: torch.Tensor
    frac_coords: torch.Tensor
    lattice: torch.Tensor
    num_atoms: torch.Tensor
    batch: torch.Tensor

    @classmethod
    def from_crystals(
        cls,
        crystals: Sequence[tuple[Any, Any, Any]],
        dtype: torch.dtype = torch.float32,
    ) -> CrystalGraphInput:
        """Batch crystals given as `(atomic_numbers (n,), frac_coords (n, 3), lattice (3, 3))` array-likes."""
        numbers = [torch.tensor(np.asarray(z), dtype=torch.long) for z, _, _ in crystals]
        frac = [torch.tensor(np.asarray(f), dtype=dtype).reshape(-1, 3) for _, f, _ in crystals]
        lattice = torch.stack([torch.tensor(np.asarray(m), dtype=dtype).reshape(3, 3) for _, _, m in crystals])
        num_atoms = torch.tensor([len(z) for z in numbers], dtype=torch.long)
        return cls(
            atomic_numbers=torch.cat(numbers),
            frac_coords=torch.cat(frac),
            lattice=lattice,
            num_atoms=num_atoms,
            batch=torch.repeat_interleave(torch.arange(len(crystals)), num_atoms),
        )

    def to(self, device: torch.device | str) -> CrystalGraphInput:
        """A copy with every tensor on `device`."""
        return CrystalGraphInput(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def check_crystal_input(crystals: CrystalLike) -> None:
    """Raise a readable error when a batch object does not follow the crystal contract (shape checks only)."""
    n_atoms = crystals.atomic_numbers.shape[0]
    n_crystals = crystals.num_atoms.shape[0]
    expected = {
        "frac_coords": (n_atoms, 3),
        "lattice": (n_crystals, 3, 3),
        "batch": (n_atoms,),
    }
    for name, shape in expected.items():
        actual = tuple(getattr(crystals, name).shape)
        if actual != shape:
            raise ValueError(f"crystal batch field {name} has shape {actual}, expected {shape}")


def cartesian_coords(frac_coords: torch.Tensor, lattice: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Cartesian positions in Å: `frac (N, 3) @ lattice[batch] (N, 3, 3)` -> `(N, 3)`."""
    return torch.einsum("ni,nij->nj", frac_coords, lattice[batch])


def fully_connected_edges(num_atoms: torch.Tensor) -> torch.Tensor:
    """All ordered atom pairs (i, j) within each crystal, self-pairs included, built without Python loops.

    Args:
        num_atoms: `(B,)` atoms per crystal.

    Returns:
        `edge_index (2, sum_b n_b^2)` of global atom indices; row 0 is the receiving atom i, row 1 the sender j.
    """
    device = num_atoms.device
    atom_start = exclusive_cumsum(num_atoms)  # (B,)
    pairs = num_atoms * num_atoms  # (B,)
    crystal = torch.repeat_interleave(torch.arange(num_atoms.numel(), device=device), pairs)  # (E,)
    local = torch.arange(crystal.numel(), device=device) - exclusive_cumsum(pairs)[crystal]  # (E,)
    n = num_atoms[crystal]
    first = atom_start[crystal]
    return torch.stack([first + local // n, first + local % n])
