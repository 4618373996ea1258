"""One material as the pipeline sees it, before and after validation.

`RawRecord` is what a reader yields: an id, where it came from (``file:line``) and an unparsed structure payload
(CIF text, a pymatgen dict or an already built `Structure`). `CrystalRecord` is a validated, ordered crystal with
its properties, captions and optional modality payloads. Keeping parsing out of the readers means a bad CIF becomes
a named rejection in a worker process instead of an exception in the reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RawRecord", "CrystalRecord", "Rejection"]


@dataclass
class RawRecord:
    """A record as read from a source file, not yet parsed or validated.

    Attributes:
        id: Material identifier as given by the source (may be empty: validation rejects it).
        location: Where the record came from, ``path:line`` or ``path:row N``; used in every error message.
        cif: CIF text, when the source stores CIFs.
        structure_dict: A pymatgen ``Structure.as_dict()`` payload, when the source stores those.
        structure: An already built pymatgen ``Structure`` (ASE and in-memory sources).
        properties: Property name -> value; units are given by the dataset card.
        captions: Zero or more text descriptions. ``None`` means the source has no caption column at all,
            ``[]`` means it has one and this record's entry is empty (a rejection reason).
        error: Set by a reader that could read the file but not this record (for example a malformed JSON line);
            validation turns it into a rejection with this reason code.
    """

    id: str
    location: str
    cif: str | None = None
    structure_dict: dict[str, Any] | None = None
    structure: Any = None
    properties: dict[str, float] = field(default_factory=dict)
    captions: list[str] | None = None
    error: tuple[str, str] | None = None


@dataclass
class CrystalRecord:
    """A validated, ordered crystal with everything the model may learn from.

    Attributes:
        id: Unique material identifier.
        structure: Ordered pymatgen ``Structure`` (lattice in Å).
        properties: Property name -> float (units in the dataset card; NaN never appears here).
        captions: Text descriptions, possibly empty when the source has none.
        split: Dataset split this record belongs to (``train``, ``val``, ``test`` or any user name).
        location: Source location ``path:line`` for provenance.
        xrd: Powder XRD intensities on the manifest's 2θ grid, shape (n_bins,), or None when absent.
        dos: Density of states on the manifest's energy grid (eV relative to E_F), shape (n_bins,), or None.
        image: Micrograph, shape (H, W) float32, or None.
        symmetry: ``spacegroup`` (international number), ``crystal_system`` and ``symprec`` from spglib, filled
            by prepare; empty when not computed or when spglib failed.
    """

    id: str
    structure: Any
    properties: dict[str, float] = field(default_factory=dict)
    captions: list[str] = field(default_factory=list)
    split: str = "train"
    location: str = ""
    xrd: np.ndarray | None = None
    dos: np.ndarray | None = None
    image: np.ndarray | None = None
    symmetry: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    """Why a record did not make it into a shard. Written as one line of ``rejects.jsonl``.

    Attributes:
        id: Record id (may be empty when the id itself was the problem).
        location: ``path:line`` of the record.
        reason: Stable, machine-readable reason code (see `mmcrystal.data.validation.REASONS`).
        detail: Human-readable explanation with the offending values.
        split: Split the record was read for.
    """

    id: str
    location: str
    reason: str
    detail: str
    split: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "location": self.location,
            "reason": self.reason,
            "detail": self.detail,
            "split": self.split,
        }
