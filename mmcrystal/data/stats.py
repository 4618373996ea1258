"""Mergeable dataset statistics for the manifest: running moments and histograms.

Each shard worker returns a `DatasetStats`; the main process merges them, so the figures are exact whatever the
number of processes and however often a run is resumed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

__all__ = ["RunningMoments", "DatasetStats"]


@dataclass
class RunningMoments:
    """Count, sum, sum of squares, min and max of a scalar; mergeable."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, values) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return
        self.n += int(values.size)
        self.total += float(values.sum())
        self.total_sq += float((values * values).sum())
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def merge(self, other: RunningMoments) -> None:
        self.n += other.n
        self.total += other.total
        self.total_sq += other.total_sq
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def summary(self) -> dict[str, float]:
        if self.n == 0:
            return {"count": 0}
        mean = self.total / self.n
        var = max(self.total_sq / self.n - mean * mean, 0.0)
        return {"count": self.n, "mean": mean, "std": math.sqrt(var), "min": self.low, "max": self.high}

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "total": self.total,
            "total_sq": self.total_sq,
            "low": self.low,
            "high": self.high,
        }

    @classmethod
    def from_json(cls, data: dict) -> RunningMoments:
        return cls(**data)


LATTICE_KEYS = ("a", "b", "c", "alpha", "beta", "gamma", "volume_per_atom")


@dataclass
class DatasetStats:
    """Statistics of the accepted records of one split (lengths in Å, angles in degrees, volume in Å^3/atom)."""

    lattice: dict[str, RunningMoments] = field(default_factory=lambda: {k: RunningMoments() for k in LATTICE_KEYS})
    properties: dict[str, RunningMoments] = field(default_factory=dict)
    num_atoms: Counter = field(default_factory=Counter)
    elements: Counter = field(default_factory=Counter)

    def add_structure(self, structure, properties: dict[str, float]) -> None:
        lat = structure.lattice
        for key, value in zip(LATTICE_KEYS[:6], (*lat.abc, *lat.angles), strict=True):
            self.lattice[key].add(value)
        self.lattice["volume_per_atom"].add(lat.volume / len(structure))
        self.num_atoms[len(structure)] += 1
        self.elements.update(int(z) for z in structure.atomic_numbers)
        for name, value in properties.items():
            self.properties.setdefault(name, RunningMoments()).add(value)

    def merge(self, other: DatasetStats) -> None:
        for key, moments in other.lattice.items():
            self.lattice.setdefault(key, RunningMoments()).merge(moments)
        for key, moments in other.properties.items():
            self.properties.setdefault(key, RunningMoments()).merge(moments)
        self.num_atoms.update(other.num_atoms)
        self.elements.update(other.elements)

    def to_json(self) -> dict:
        return {
            "lattice": {k: m.to_json() for k, m in self.lattice.items()},
            "properties": {k: m.to_json() for k, m in self.properties.items()},
            "num_atoms": {str(k): v for k, v in sorted(self.num_atoms.items())},
            "elements": {str(k): v for k, v in sorted(self.elements.items())},
        }

    @classmethod
    def from_json(cls, data: dict) -> DatasetStats:
        return cls(
            lattice={k: RunningMoments.from_json(v) for k, v in data["lattice"].items()},
            properties={k: RunningMoments.from_json(v) for k, v in data["properties"].items()},
            num_atoms=Counter({int(k): v for k, v in data["num_atoms"].items()}),
            elements=Counter({int(k): v for k, v in data["elements"].items()}),
        )

    def summary(self) -> dict:
        """Human/model-facing figures: moments, histograms keyed by integers as strings (JSON)."""
        return {
            "lattice": {k: m.summary() for k, m in self.lattice.items()},
            "properties": {k: m.summary() for k, m in self.properties.items()},
            "num_atoms_histogram": {str(k): v for k, v in sorted(self.num_atoms.items())},
            "element_histogram": {str(k): v for k, v in sorted(self.elements.items())},
        }
