"""The two tensors bundles passed between processes, denoiser, guidance and sampler: the noisy state of a batch of
crystals and the denoiser's outputs; plus stacking copies of both along the crystal axis (for batched guidance).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = ["DenoiserOutput", "NoisyCrystal", "repeat_crystals", "split_outputs"]


@dataclass
class NoisyCrystal:
    """B crystals with N atoms at some diffusion time (one time per crystal, held by the caller).

    Attributes:
        types: `(N,)` long element classes (Z - 1), or the process's mask index for masked atoms.
        frac_coords: `(N, 3)` fractional coordinates in [0, 1).
        lattice_params: `(B, k)` the lattice process's parametrisation (standardised log lengths and angles).
        lattice: `(B, 3, 3)` lattice rows in Å built from `lattice_params` (always a valid cell); the denoiser
            reads only its Gram matrix.
        num_atoms: `(B,)` long atoms per crystal.
        batch: `(N,)` long crystal index of each atom, sorted.
    """

    types: torch.Tensor
    frac_coords: torch.Tensor
    lattice_params: torch.Tensor
    lattice: torch.Tensor
    num_atoms: torch.Tensor
    batch: torch.Tensor

    @property
    def num_crystals(self) -> int:
        return int(self.num_atoms.shape[0])

    def replace(self, **changes: torch.Tensor) -> NoisyCrystal:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)


@dataclass
class DenoiserOutput:
    """What `CrystalDenoiser` predicts for a `NoisyCrystal`.

    Attributes:
        coords: `(N, 3)` normalised fractional-coordinate score (zero mean per crystal).
        lattice: `(B, k)` eps or x_0 in the lattice process's parametrisation.
        types: `(N, num_classes)` logits of the clean element class.
    """

    coords: torch.Tensor
    lattice: torch.Tensor
    types: torch.Tensor


def repeat_crystals(noisy: NoisyCrystal, copies: int) -> NoisyCrystal:
    """Stack `copies` copies of a batch along the crystal axis: copy k holds crystals k B .. (k + 1) B - 1."""
    offsets = torch.arange(copies, device=noisy.batch.device).repeat_interleave(noisy.batch.numel())
    return NoisyCrystal(
        types=noisy.types.repeat(copies),
        frac_coords=noisy.frac_coords.repeat(copies, 1),
        lattice_params=noisy.lattice_params.repeat(copies, 1),
        lattice=noisy.lattice.repeat(copies, 1, 1),
        num_atoms=noisy.num_atoms.repeat(copies),
        batch=noisy.batch.repeat(copies) + offsets * noisy.num_crystals,
    )


def split_outputs(out: DenoiserOutput, copies: int) -> list[DenoiserOutput]:
    """Undo `repeat_crystals` on the outputs: one `DenoiserOutput` per copy."""
    parts = zip(
        out.coords.tensor_split(copies), out.lattice.tensor_split(copies), out.types.tensor_split(copies), strict=True
    )
    return [DenoiserOutput(coords=c, lattice=lat, types=ty) for c, lat, ty in parts]
