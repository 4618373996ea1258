"""Fixtures of the diffusion tests: real structures as `CrystalBatch`, one torch thread."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcrystal.data.batch import CrystalBatch


def structures_to_batch(structures, dtype: torch.dtype = torch.float32) -> CrystalBatch:
    """pymatgen structures -> `CrystalBatch` (frac coords as stored, lattice rows in Å)."""
    counts = torch.tensor([len(s) for s in structures], dtype=torch.long)
    return CrystalBatch(
        atomic_numbers=torch.tensor(np.concatenate([s.atomic_numbers for s in structures]), dtype=torch.long),
        frac_coords=torch.tensor(np.concatenate([s.frac_coords for s in structures]), dtype=dtype),
        lattice=torch.tensor(np.stack([s.lattice.matrix for s in structures]), dtype=dtype),
        num_atoms=counts,
        batch=torch.repeat_interleave(torch.arange(len(structures)), counts),
    )


@pytest.fixture(scope="session")
def to_batch():
    """The `structures_to_batch` converter (fixtures are how test modules share helpers here)."""
    return structures_to_batch


def random_orthogonal(seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A random 3x3 orthogonal matrix with determinant -1 (a rotation combined with a reflection)."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return (q if torch.det(q) < 0 else -q).to(dtype)


@pytest.fixture(scope="session")
def orthogonal():
    """`random_orthogonal(seed, dtype)`."""
    return random_orthogonal


def permute_within_crystals(batch: torch.Tensor, seed: int) -> torch.Tensor:
    """A permutation of atom rows that shuffles atoms inside each crystal and keeps `batch` sorted."""
    gen = torch.Generator().manual_seed(seed)
    return torch.argsort(batch.double() + 0.5 * torch.rand(batch.numel(), generator=gen, dtype=torch.float64))


@pytest.fixture(scope="session")
def atom_permutation():
    """`permute_within_crystals(batch, seed)`."""
    return permute_within_crystals
