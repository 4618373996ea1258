"""The protocol record every evaluation number is reported with, plus content hashing for caches.

Comparisons between generative models only hold under the same protocol (see ``docs/EVALUATION.md``): number of
samples, seed, dataset and split, StructureMatcher tolerances, energy model and version, relaxation settings, hull
reference, stability thresholds, diffusion steps and guidance scale. `ProtocolRecord` collects them and is written
next to every aggregate; `content_hash` names cached artefacts (reference indices, hull energies, chunk results) by
what they were computed from, so a changed input or setting can never reuse a stale cache.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MatcherTolerances",
    "DEFAULT_TOLERANCES",
    "CSP_TOLERANCES",
    "ProtocolRecord",
    "content_hash",
    "library_versions",
    "default_cache_dir",
]


@dataclass(frozen=True)
class MatcherTolerances:
    """pymatgen ``StructureMatcher`` settings.

    Attributes:
        ltol: Fractional length tolerance of the lattice vectors.
        stol: Site tolerance, as a fraction of the average free length per atom ``(V / n)^(1/3)``.
        angle_tol: Lattice angle tolerance in degrees.
        primitive_cell: Reduce both structures to primitive cells before matching (pymatgen default).
        scale: Scale volumes to each other before matching (pymatgen default).
        attempt_supercell: Try supercell matches between cells with different numbers of formula units.
    """

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0
    primitive_cell: bool = True
    scale: bool = True
    attempt_supercell: bool = False

    def matcher(self):
        """A pymatgen ``StructureMatcher`` with these settings."""
        from pymatgen.analysis.structure_matcher import StructureMatcher

        return StructureMatcher(
            ltol=self.ltol,
            stol=self.stol,
            angle_tol=self.angle_tol,
            primitive_cell=self.primitive_cell,
            scale=self.scale,
            attempt_supercell=self.attempt_supercell,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# pymatgen's own defaults (used for uniqueness / novelty unless told otherwise).
DEFAULT_TOLERANCES = MatcherTolerances()
# CDVAE / DiffCSP crystal-structure-prediction tolerances (Xie et al. 2021; Jiao et al. 2023).
CSP_TOLERANCES = MatcherTolerances(ltol=0.3, stol=0.5, angle_tol=10.0)


def content_hash(*parts: Any, length: int = 64) -> str:
    """SHA-256 of JSON-serialised parts (strings are hashed as given). Stable across processes and runs."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            h.update(part)
        elif isinstance(part, str):
            h.update(part.encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x1f")  # unit separator: ("ab", "c") and ("a", "bc") hash differently
    return h.hexdigest()[:length]


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour changes evaluation numbers."""
    import importlib.metadata as md

    versions = {}
    for name in ("pymatgen", "smact", "spglib", "chgnet", "torch", "numpy", "scipy", "mmcrystal"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def default_cache_dir() -> Path:
    """Where reference indices and hull energies are cached: ``$MMCRYSTAL_CACHE`` or ``~/.cache/mmcrystal``."""
    root = os.environ.get("MMCRYSTAL_CACHE") or Path.home() / ".cache" / "mmcrystal"
    return Path(root) / "evaluation"


@dataclass
class ProtocolRecord:
    """Everything a reported number depends on. Written as ``protocol`` in ``metrics.json``.

    Attributes:
        n_samples: Samples read (parsed or not).
        n_parsed: Samples that parsed into a structure.
        seed: Seed of the generation run (as given by the caller) and of any subsampling done here.
        dataset: Dataset the model was trained on / is compared with (e.g. ``mp20``).
        split: Split the samples are compared against for distribution metrics (e.g. ``test``).
        train_split: What was used as the training set (novelty reference), in words.
        reference: Novelty reference: paths, number of structures, content hash.
        matcher: StructureMatcher tolerances of uniqueness / novelty.
        bucketing: How candidate pairs are pre-filtered before any fit (reduced formula [+ space group]).
        validity: Thresholds and SMACT options of the validity stage.
        energy_model: Potential name, package version and model version; None when stability was not run.
        relaxation: Optimizer, fmax (eV/Å), max steps, cell relaxation; None when not relaxed.
        hull: Hull reference: kind (self-consistent / user), source, hash, entries, elemental references.
        stability_thresholds: E_hull thresholds in eV/atom.
        adherence: Condition-adherence settings (symprec, property tolerance, XRD grid).
        distribution: Fingerprints, coverage cutoffs, distribution reference and subsample size.
        diffusion_steps: Number of reverse-diffusion steps of the generation run, when given.
        guidance_scale: Guidance scale of the generation run, when given.
        stages: Stages that were run, in order.
        versions: Library versions.
        date: UTC time the record was written.
        extra: Free-form caller notes.
    """

    n_samples: int = 0
    n_parsed: int = 0
    seed: int | None = None
    dataset: str | None = None
    split: str | None = None
    train_split: str | None = None
    reference: dict[str, Any] | None = None
    matcher: dict[str, Any] = field(default_factory=DEFAULT_TOLERANCES.as_dict)
    bucketing: str = "reduced formula"
    validity: dict[str, Any] = field(default_factory=dict)
    energy_model: dict[str, Any] | None = None
    relaxation: dict[str, Any] | None = None
    hull: dict[str, Any] | None = None
    stability_thresholds: list[float] = field(default_factory=lambda: [0.0, 0.1])
    adherence: dict[str, Any] | None = None
    distribution: dict[str, Any] | None = None
    diffusion_steps: int | None = None
    guidance_scale: float | None = None
    stages: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=library_versions)
    date: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
