"""Streaming samples to disk: one folder per run (or per rank, see distributed.py), written batch by batch.

    OUT/cif/sample_<i>.cif            one CIF per crystal (i: global sample index, zero-padded)
    OUT/extxyz/batch_<k>.extxyz       one extxyz per batch (written last: its presence marks the batch as written)
    OUT/samples.jsonl                 one JSON line of metadata per crystal (request, seeds, formula, files)
    OUT/progress.json                 the request and the batches done (rewritten after every batch)
    OUT/manifest.json                 written when a run finishes or shards are merged: request, batches, sources,
                                      SHA-256 of every extxyz, software versions

A batch counts as done when its extxyz, all its CIFs and all its metadata lines exist. Opening a folder again keeps
the done batches and drops the metadata of half-written ones, so they can be regenerated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["SampleWriter", "complete_batches", "read_progress", "read_records", "sample_ids", "write_manifest"]

MANIFEST_FORMAT = "mmcrystal-samples"


def sample_ids(n: int, batch_size: int) -> list[list[str]]:
    """The ids of each batch: batch k holds samples k B .. min((k + 1) B, n) - 1."""
    return [[f"sample_{i:06d}" for i in range(lo, min(lo + batch_size, n))] for lo in range(0, n, batch_size)]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_records(folder: str | Path) -> dict[str, dict]:
    """The metadata lines of a folder by id (a line cut by an interruption is skipped: its batch is not done)."""
    path = Path(folder) / "samples.jsonl"
    records = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[record["id"]] = record
    return records


def read_progress(folder: str | Path) -> dict | None:
    """A folder's `progress.json`, or None when it has none."""
    path = Path(folder) / "progress.json"
    return json.loads(path.read_text()) if path.exists() else None


def extxyz_name(k: int) -> str:
    return f"batch_{k:05d}.extxyz"


def complete_batches(folder: str | Path, ids: Sequence[Sequence[str]], records: dict | None = None) -> set[int]:
    """Batches whose extxyz, CIFs and metadata lines all exist in `folder` (read only)."""
    folder = Path(folder)
    records = read_records(folder) if records is None else records
    done = set()
    for k, batch_ids in enumerate(ids):
        files = [folder / "extxyz" / extxyz_name(k)] + [folder / "cif" / f"{sid}.cif" for sid in batch_ids]
        if all(p.exists() for p in files) and all(sid in records for sid in batch_ids):
            done.add(k)
    return done


class SampleWriter:
    """The folder of one sample run (or one rank's shard of it); see the module docstring for the layout.

    Args:
        out: The folder.
        request: JSON-able description of the run (with n and batch_size); a folder refuses a different request.
        batches: The batches this folder is responsible for (default: all); `finish` reports it complete when
            those are done.
        extra: JSON-able fields added to `progress.json` (e.g. rank and world size of a shard).
    """

    def __init__(self, out: str | Path, request: dict, batches: Sequence[int] | None = None, extra: dict | None = None):
        self.out = Path(out)
        self.request = json.loads(json.dumps(request))
        previous = read_progress(self.out)
        if previous is not None and previous["request"] != self.request:
            raise ValueError(f"{self.out} holds samples of another request (see progress.json); use a new folder")
        for sub in ("cif", "extxyz"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.ids = sample_ids(int(self.request["n"]), int(self.request["batch_size"]))
        self.num_batches = len(self.ids)
        self.batches = list(range(self.num_batches)) if batches is None else sorted(batches)
        self.extra = dict(extra or {})
        records = read_records(self.out)
        self.done = complete_batches(self.out, self.ids, records)
        self._rewrite_metadata(records)
        self.report(finished=False)

    @property
    def meta_path(self) -> Path:
        return self.out / "samples.jsonl"

    def extxyz(self, k: int) -> Path:
        return self.out / "extxyz" / extxyz_name(k)

    def _rewrite_metadata(self, records: dict) -> None:
        lines = [json.dumps(records[sid]) + "\n" for k in sorted(self.done) for sid in self.ids[k]]
        _atomic_write(self.meta_path, "".join(lines))

    def write(self, k: int, structures: list, metadata: list[dict]) -> None:
        """CIFs, then the metadata lines, then the batch's extxyz (its presence marks the batch as written)."""
        from ase.io import write
        from pymatgen.io.ase import AseAtomsAdaptor
        from pymatgen.io.cif import CifWriter

        atoms = []
        for sid, structure in zip(self.ids[k], structures, strict=True):
            _atomic_write(self.out / "cif" / f"{sid}.cif", str(CifWriter(structure)))
            atoms.append(AseAtomsAdaptor.get_atoms(structure))
            atoms[-1].info["id"] = sid
        with self.meta_path.open("a") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in metadata)
        tmp = self.extxyz(k).with_name(self.extxyz(k).name + ".tmp")
        write(str(tmp), atoms, format="extxyz")
        os.replace(tmp, self.extxyz(k))
        self.done.add(k)
        self.report(finished=False)

    def copy_batch(self, k: int, source: str | Path, records: dict) -> None:
        """Copy batch k from another folder of the same request (a rank's shard), in the same write order."""
        source = Path(source)
        for sid in self.ids[k]:
            tmp = self.out / "cif" / f"{sid}.cif.tmp"
            shutil.copyfile(source / "cif" / f"{sid}.cif", tmp)
            os.replace(tmp, self.out / "cif" / f"{sid}.cif")
        with self.meta_path.open("a") as handle:
            handle.writelines(json.dumps(records[sid]) + "\n" for sid in self.ids[k])
        tmp = self.extxyz(k).with_name(self.extxyz(k).name + ".tmp")
        shutil.copyfile(source / "extxyz" / extxyz_name(k), tmp)
        os.replace(tmp, self.extxyz(k))
        self.done.add(k)

    def report(self, finished: bool) -> dict:
        """Write and return `progress.json`."""
        summary = dict(request=self.request, out=str(self.out), num_batches=self.num_batches,
                       batches_done=sorted(self.done), samples_done=sum(len(self.ids[k]) for k in self.done),
                       complete=finished, **self.extra)  # fmt: skip
        _atomic_write(self.out / "progress.json", json.dumps(summary, indent=1))
        return summary

    def finish(self) -> dict:
        """Sort the metadata by id and record whether this folder's batches are all done."""
        self.done = complete_batches(self.out, self.ids)
        self._rewrite_metadata(read_records(self.out))
        return self.report(finished=set(self.batches) <= self.done)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _batch_entry(writer: SampleWriter, k: int) -> dict:
    ids = writer.ids[k]
    path = writer.extxyz(k)
    return {"batch": k, "first": ids[0], "last": ids[-1], "extxyz": f"extxyz/{path.name}", "sha256": _sha256(path)}


def write_manifest(writer: SampleWriter, sources: dict[int, str] | None = None) -> dict:
    """Write `manifest.json` of a finished (or merged) run folder; `sources` maps batch -> shard it came from
    (merged with the sources of an earlier manifest of the folder)."""
    import torch

    import mmcrystal

    path = writer.out / "manifest.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    merged = {int(k): v for k, v in (previous.get("batches_from") or {}).items()}
    merged.update(sources or {})
    done = sorted(writer.done)
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "request": writer.request,
        "num_samples": sum(len(writer.ids[k]) for k in done),
        "num_batches": writer.num_batches,
        "complete": len(done) == writer.num_batches,
        "missing_batches": sorted(set(range(writer.num_batches)) - set(done)),
        "files": {"metadata": "samples.jsonl", "cif": "cif/<id>.cif", "extxyz": "extxyz/batch_<k>.extxyz"},
        "batches": [_batch_entry(writer, k) for k in done],
        "batches_from": {str(k): v for k, v in sorted(merged.items())},
        "software": {"mmcrystal": mmcrystal.__version__, "torch": torch.__version__},
    }
    _atomic_write(path, json.dumps(manifest, indent=1))
    return manifest
