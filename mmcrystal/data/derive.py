"""Derived modalities added by `mmcrystal prepare --modalities ...`, batched per shard in the worker processes."""

from __future__ import annotations

from mmcrystal.data.record import CrystalRecord

__all__ = ["MODALITIES", "derive_modalities", "modality_metadata"]

MODALITIES = ("captions", "xrd", "micrograph")


def derive_modalities(records: list[CrystalRecord], names: list[str], seed: int = 0) -> None:
    """Fill the requested modalities in place."""
    unknown = sorted(set(names) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; choose from {MODALITIES}")
    raise NotImplementedError("derived modalities arrive with the modalities issue")


def modality_metadata(names: list[str]) -> dict:
    """Grids and settings of the derived modalities, for the manifest."""
    return {}
