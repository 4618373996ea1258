"""Typed batches: flat atoms with a batch index (the layout periodic GNNs and crystal diffusion use), plus the
optional modalities with a presence mask each. Missing modalities are normal; losses skip absent samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

import numpy as np
import torch

from mmcrystal.data.symmetry import crystal_system_index

__all__ = ["CrystalBatch", "MultimodalBatch", "collate_samples"]


@dataclass
class CrystalBatch:
    """B crystals with N atoms in total.

    Attributes:
        atomic_numbers: (N,) long.
        frac_coords: (N, 3) float, fractional coordinates as stored (not wrapped).
        lattice: (B, 3, 3) float, rows are the lattice vectors a, b, c in Å (cartesian = frac @ lattice).
        num_atoms: (B,) long.
        batch: (N,) long, index of the crystal each atom belongs to (sorted).
    """

    atomic_numbers: torch.Tensor
    frac_coords: torch.Tensor
    lattice: torch.Tensor
    num_atoms: torch.Tensor
    batch: torch.Tensor

    @property
    def num_graphs(self) -> int:
        return int(self.num_atoms.shape[0])

    def to(self, device, non_blocking: bool = False) -> CrystalBatch:
        return CrystalBatch(*(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)))


@dataclass
class MultimodalBatch:
    """A `CrystalBatch` and every other modality with a (B,) bool presence mask.

    Attributes:
        crystal: The structures.
        ids: Material ids, length B.
        properties: (B, P) float, NaN-free; absent values are 0 with ``property_mask`` False.
        property_mask: (B, P) bool.
        property_names: The P property names, in column order.
        captions: One caption per sample (a seeded random pick among the record's captions), "" when absent.
        caption_mask: (B,) bool.
        xrd: (B, L_xrd) float or None when no sample of the split has XRD; rows of absent samples are zeros.
        xrd_mask: (B,) bool.
        dos: (B, L_dos) float or None; ``dos_mask`` (B,) bool.
        image: (B, 1, H, W) float or None; ``image_mask`` (B,) bool.
        is_padding: (B,) bool, True for samples repeated only to give every rank the same batch count.
        spacegroup: (B,) long international space-group number, 0 when unknown.
        crystal_system: (B,) long index into `mmcrystal.data.symmetry.CRYSTAL_SYSTEMS`, -1 when unknown.
    """

    crystal: CrystalBatch
    ids: list[str]
    properties: torch.Tensor
    property_mask: torch.Tensor
    property_names: list[str]
    captions: list[str]
    caption_mask: torch.Tensor
    xrd: torch.Tensor | None
    xrd_mask: torch.Tensor
    dos: torch.Tensor | None
    dos_mask: torch.Tensor
    image: torch.Tensor | None
    image_mask: torch.Tensor
    is_padding: torch.Tensor
    spacegroup: torch.Tensor
    crystal_system: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device, non_blocking: bool = False) -> MultimodalBatch:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=non_blocking) if hasattr(value, "to") else value
        return MultimodalBatch(**moved)


def _stack_optional(samples: list[dict], key: str, dtype=np.float32) -> tuple[torch.Tensor | None, torch.Tensor]:
    present = torch.tensor([key in s for s in samples], dtype=torch.bool)
    if not bool(present.any()):
        return None, present
    shape = next(s[key].shape for s in samples if key in s)
    out = np.zeros((len(samples), *shape), dtype=dtype)
    for i, sample in enumerate(samples):
        if key in sample:
            if sample[key].shape != shape:
                raise ValueError(f"{key} of {sample['meta']['id']} has shape {sample[key].shape}, batch has {shape}")
            out[i] = sample[key]
    return torch.from_numpy(out), present


def collate_samples(
    samples: list[dict], property_names: list[str] | None = None, rng: random.Random | None = None
) -> MultimodalBatch:
    """Decoded samples (see `mmcrystal.data.shards.decode_sample`) -> `MultimodalBatch`.

    Args:
        samples: Dicts with ``meta``, ``z``, ``frac``, ``lattice`` and optional ``xrd``/``dos``/``image``; a sample
            may carry ``is_padding`` True.
        property_names: Property columns, in order (the manifest's ``property_names``); default: union in the batch.
        rng: Picks one caption per sample; None takes the first caption (deterministic evaluation).
    """
    counts = np.fromiter((len(s["z"]) for s in samples), dtype=np.int64, count=len(samples))
    crystal = CrystalBatch(
        atomic_numbers=torch.from_numpy(np.concatenate([s["z"] for s in samples]).astype(np.int64)),
        frac_coords=torch.from_numpy(np.concatenate([s["frac"] for s in samples]).astype(np.float32)),
        lattice=torch.from_numpy(np.stack([s["lattice"] for s in samples]).astype(np.float32)),
        num_atoms=torch.from_numpy(counts),
        batch=torch.from_numpy(np.repeat(np.arange(len(samples)), counts)),
    )
    metas = [s["meta"] for s in samples]
    names = property_names if property_names is not None else sorted({k for m in metas for k in m["properties"]})
    props = np.zeros((len(samples), len(names)), dtype=np.float32)
    mask = np.zeros((len(samples), len(names)), dtype=bool)
    for i, meta in enumerate(metas):
        for j, name in enumerate(names):
            value = meta["properties"].get(name)
            if value is not None:
                props[i, j], mask[i, j] = value, True
    captions = [(rng.choice(m["captions"]) if rng else m["captions"][0]) if m["captions"] else "" for m in metas]
    xrd, xrd_mask = _stack_optional(samples, "xrd")
    dos, dos_mask = _stack_optional(samples, "dos")
    image, image_mask = _stack_optional(samples, "image")
    return MultimodalBatch(
        crystal=crystal,
        ids=[m["id"] for m in metas],
        properties=torch.from_numpy(props),
        property_mask=torch.from_numpy(mask),
        property_names=list(names),
        captions=captions,
        caption_mask=torch.tensor([bool(c) for c in captions]),
        xrd=xrd,
        xrd_mask=xrd_mask,
        dos=dos,
        dos_mask=dos_mask,
        image=None if image is None else image.unsqueeze(1),
        image_mask=image_mask,
        is_padding=torch.tensor([bool(s.get("is_padding", False)) for s in samples]),
        spacegroup=torch.tensor([int(m.get("symmetry", {}).get("spacegroup", 0)) for m in metas]),
        crystal_system=torch.tensor([crystal_system_index(m.get("symmetry", {}).get("crystal_system")) for m in metas]),
    )
