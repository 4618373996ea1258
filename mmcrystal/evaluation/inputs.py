"""Reading samples and reference sets for evaluation: any source `mmcrystal.data.readers` knows, or a prepared
shard folder, streamed as small picklable `SampleRecord`s that worker processes parse themselves.

A record that cannot be read or parsed is never an exception: `parse_sample` returns the reason, and the runner
counts and logs it with the record's id and location.
"""

from __future__ import annotations

import glob
import json
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcrystal.evaluation.protocol import content_hash

__all__ = [
    "SampleRecord",
    "iter_sample_records",
    "parse_sample",
    "expand_paths",
    "records_hash",
    "load_structures",
    "worker_pool",
]

log = logging.getLogger(__name__)


@dataclass
class SampleRecord:
    """One sample as read, not yet parsed.

    Attributes:
        index: Position in the input stream (0-based), the row of the per-structure table.
        id: Record id from the source (file stem, material id, ...).
        location: ``path:row N`` or ``path:frame N`` for error messages.
        cif: CIF text, when the source stores CIFs.
        structure: A pymatgen Structure dict, when the source stores structures.
        properties: Float properties of the record (e.g. a generated sample's target values).
        error: Why the reader could not decode this record, if it could not.
    """

    index: int
    id: str
    location: str
    cif: str | None = None
    structure: dict[str, Any] | None = None
    properties: dict[str, float] | None = None
    error: str | None = None

    def payload_text(self) -> str:
        """Text that identifies the sample's content (CIF or canonical JSON), for content hashes."""
        if self.cif is not None:
            return self.cif
        if self.structure is not None:
            return json.dumps(self.structure, sort_keys=True, default=str)
        return f"error:{self.error}"


def expand_paths(paths: str | Iterable[str]) -> list[str]:
    """One path, a glob, or a list of them -> sorted concrete paths (a glob that matches nothing raises)."""
    items = [paths] if isinstance(paths, str) else list(paths)
    out: list[str] = []
    for item in items:
        if any(ch in item for ch in "*?["):
            hits = sorted(glob.glob(item))
            if not hits:
                raise FileNotFoundError(f"no file matches {item!r}")
            out += hits
        else:
            out.append(item)
    return out


def _is_shard_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "manifest.json").exists() or any(path.glob("**/*.tar")))


def _iter_shards(folder: Path, start: int) -> Iterator[SampleRecord]:
    from mmcrystal.data.shards import decode_sample, iter_shard, record_from_sample

    index = start
    for shard in sorted(folder.glob("**/*.tar")):
        for key, files in iter_shard(str(shard)):
            location = f"{shard}:{key}"
            try:
                record = record_from_sample(decode_sample(files))
                yield SampleRecord(index, record.id, location, structure=record.structure.as_dict())
            except Exception as exc:  # noqa: BLE001 - a broken sample is a counted skip
                yield SampleRecord(index, key, location, error=f"{type(exc).__name__}: {exc}")
            index += 1


def _iter_source(path: str, start: int) -> Iterator[SampleRecord]:
    from mmcrystal.data.readers import SourceSpec, read_source

    for offset, raw in enumerate(read_source(SourceSpec(path))):
        structure = None
        if raw.structure is not None:
            structure = raw.structure.as_dict()
        elif raw.structure_dict is not None:
            structure = raw.structure_dict
        error = f"{raw.error[0]}: {raw.error[1]}" if raw.error else None
        yield SampleRecord(start + offset, raw.id, raw.location, raw.cif, structure, dict(raw.properties or {}), error)


def iter_sample_records(paths: str | Iterable[str]) -> Iterator[SampleRecord]:
    """Stream records from CIF folders, CSV(.gz) tables with a ``cif`` column, extxyz/ASE files, JSON lines or
    prepared shard folders (``manifest.json`` + ``*.tar``), in order, numbered across all paths."""
    index = 0
    for path in expand_paths(paths):
        reader = _iter_shards(Path(path), index) if _is_shard_folder(Path(path)) else _iter_source(path, index)
        for record in reader:
            yield record
            index = record.index + 1


def parse_sample(record: SampleRecord):
    """(Structure, None) or (None, reason). Disordered structures are refused (generated crystals are ordered)."""
    from pymatgen.core import Structure

    if record.error is not None:
        return None, record.error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CIF rounding warnings are normal
            if record.cif is not None:
                structure = Structure.from_str(record.cif, fmt="cif")
            elif record.structure is not None:
                structure = Structure.from_dict(record.structure)
            else:
                return None, "no structure payload"
    except Exception as exc:  # noqa: BLE001 - any parser failure is a counted skip, never a crash
        return None, f"unparsable: {type(exc).__name__}: {str(exc)[:160]}"
    if len(structure) == 0:
        return None, "empty structure"
    if not structure.is_ordered:
        return None, "disordered (partial occupancy)"
    return structure, None


def records_hash(records: Iterable[SampleRecord], *settings: Any) -> str:
    """Content hash of a set of records (their payloads, in order) and the settings that apply to them."""
    return content_hash([r.payload_text() for r in records], *settings)


def _parse_task(records: Sequence[SampleRecord]) -> list[tuple[Any, str | None]]:
    """Worker task: parse records; structures travel back as compact arrays (cheaper to pickle)."""
    from mmcrystal.evaluation.matching import compact

    out = []
    for record in records:
        structure, reason = parse_sample(record)
        out.append((None if structure is None else compact(structure), reason))
    return out


def load_structures(
    paths: str | Iterable[str], executor=None, chunk: int = 500
) -> tuple[list[SampleRecord], list[Any]]:
    """Read and parse every record (in parallel with an executor); unparsable ones are logged and dropped.
    Returns (records, structures)."""
    from mmcrystal.evaluation.matching import from_compact

    all_records = list(iter_sample_records(paths))
    chunks = [all_records[i : i + chunk] for i in range(0, len(all_records), chunk)]
    parsed = executor.map(_parse_task, chunks) if executor is not None else map(_parse_task, chunks)
    records, structures, skipped = [], [], 0
    for record, (c, reason) in zip(all_records, (x for part in parsed for x in part), strict=True):
        if c is None:
            skipped += 1
            log.warning("skipping %s (%s): %s", record.id, record.location, reason)
            continue
        records.append(record)
        structures.append(from_compact(c))
    if skipped:
        log.warning("%d record(s) of %s could not be parsed and were skipped", skipped, paths)
    return records, structures


def _init_worker(threads: int) -> None:
    """Worker start-up: cap BLAS / OpenMP / torch threads so that W workers use W cores, not W x cores."""
    import os

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)


def worker_pool(workers: int, threads_per_worker: int = 1):
    """A process pool that is safe next to torch, or None for ``workers <= 0``.

    Workers are spawned, not forked: a forked child inherits torch's (or OpenMP's) thread-pool state from a parent
    that already ran torch code and can deadlock on its first parallel region.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if workers <= 0:
        return None
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads_per_worker,),
    )
