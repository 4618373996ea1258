"""Inputs of property models as in-memory samples (the dicts `collate_samples` batches).

A sample is ``{"meta": {"id", "properties", "captions"}, "z": (n,), "frac": (n, 3), "lattice": (3, 3) Å}`` plus
optional ``xrd``: what prepared shards decode to, so pymatgen structures, CIF files and prepared splits all go
through the same collate and the same model code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "structure_sample",
    "structures_to_samples",
    "load_prepared_samples",
    "read_structure_files",
    "sample_values",
]

log = logging.getLogger(__name__)


def structure_sample(structure, sample_id: str, properties: dict[str, float] | None = None) -> dict:
    """One pymatgen `Structure` -> sample.

    Raises:
        ValueError: A disordered (partially occupied) or empty structure, naming ``sample_id``.
    """
    if len(structure) == 0:
        raise ValueError(f"structure {sample_id!r} has no atoms")
    if not structure.is_ordered:
        raise ValueError(f"structure {sample_id!r} is disordered (partial occupancies); order it first")
    return {
        "meta": {"id": str(sample_id), "properties": dict(properties or {}), "captions": []},
        "z": np.asarray(structure.atomic_numbers, dtype=np.int64),
        "frac": np.asarray(structure.frac_coords, dtype=np.float64),
        "lattice": np.asarray(structure.lattice.matrix, dtype=np.float64),
    }


def structures_to_samples(
    structures: Sequence,
    ids: Sequence[str] | None = None,
    values: np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> list[dict]:
    """Structures (and optionally a (N, T) array of target values, NaN = unknown, columns ``names``) -> samples."""
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(structures))]
    if len(ids) != len(structures):
        raise ValueError(f"{len(ids)} ids for {len(structures)} structures")
    if values is not None:
        values = np.asarray(values, dtype=np.float64).reshape(len(structures), -1)
        if names is None or values.shape[1] != len(names):
            raise ValueError(f"values of shape {values.shape} need one name per column, got {names}")
    samples = []
    for i, (structure, sample_id) in enumerate(zip(structures, ids, strict=True)):
        props = {}
        if values is not None:
            props = {n: float(v) for n, v in zip(names, values[i], strict=True) if np.isfinite(v)}
        samples.append(structure_sample(structure, sample_id, props))
    return samples


def load_prepared_samples(
    root: str, splits: Sequence[str] | None = None, fields: Sequence[str] = ("z", "frac", "lattice")
) -> tuple[list[dict], dict]:
    """Every sample of the given splits of a prepared folder (default: all splits, manifest order) and the manifest."""
    from mmcrystal.data.datamodule import load_manifest
    from mmcrystal.data.loader import InMemoryCrystalDataset, ShardInfo

    manifest = load_manifest(root)
    available = list(manifest["splits"])
    wanted = list(splits) if splits else available
    missing = [s for s in wanted if s not in available]
    if missing:
        raise KeyError(f"{root}: no split(s) {missing}; it has {available}")
    samples: list[dict] = []
    for split in wanted:
        shards = [
            ShardInfo(f"{root.rstrip('/')}/{s['file']}", s["samples"]) for s in manifest["splits"][split]["shards"]
        ]
        samples += InMemoryCrystalDataset.from_shards(shards, tuple(fields)).samples
    return samples, manifest


def read_structure_files(path: str | Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """Samples from a structure file (CIF or anything pymatgen reads), a folder of ``*.cif`` or a CSV/CSV.gz with a
    ``cif`` column (id from ``material_id``/``id``; float columns kept as properties, for reference).

    Returns:
        ``(samples, skipped)``; ``skipped`` lists ``(id, reason)`` of records that could not be read (each is logged).
    """
    path = Path(path)
    samples, skipped = [], []

    def add(sample_id: str, make) -> None:
        try:
            samples.append(make())
        except Exception as err:  # noqa: BLE001 - a bad record is skipped, counted and reported, never fatal
            skipped.append((sample_id, f"{type(err).__name__}: {err}"))
            log.warning("predict: skipping %s: %s", sample_id, skipped[-1][1])

    from pymatgen.core import Structure

    if path.is_dir():
        files = sorted(path.glob("*.cif"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.cif files (and no manifest.json of a prepared folder)")
        for file in files:
            add(file.stem, lambda f=file: structure_sample(Structure.from_file(str(f)), f.stem))
    elif path.name.endswith((".csv", ".csv.gz")):
        import pandas as pd

        frame = pd.read_csv(path)
        if "cif" not in frame.columns:
            raise ValueError(f"{path}: a CSV input needs a 'cif' column; it has {list(frame.columns)}")
        id_col = next((c for c in ("material_id", "id") if c in frame.columns), None)
        floats = [c for c in frame.columns if frame[c].dtype.kind == "f"]
        for row, record in enumerate(frame.to_dict("records")):
            sample_id = str(record[id_col]) if id_col else f"{path.name}:{row}"
            props = {c: float(record[c]) for c in floats if np.isfinite(record[c])}
            add(
                sample_id,
                lambda r=record, i=sample_id, p=props: structure_sample(Structure.from_str(r["cif"], "cif"), i, p),
            )
    elif path.is_file():
        add(path.stem, lambda: structure_sample(Structure.from_file(str(path)), path.stem))
    else:
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    return samples, skipped


def sample_values(samples: Sequence[dict], names: Sequence[str]) -> np.ndarray:
    """(N, T) float array of the named properties of samples, NaN where a sample lacks one."""
    out = np.full((len(samples), len(names)), np.nan)
    for i, sample in enumerate(samples):
        props = sample["meta"].get("properties", {})
        for j, name in enumerate(names):
            if props.get(name) is not None:
                out[i, j] = props[name]
    return out
