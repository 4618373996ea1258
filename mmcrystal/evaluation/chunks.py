"""Per-chunk work of an evaluation, run in worker processes: every stage's per-structure part.

A chunk is a few hundred consecutive samples. `process_chunk` parses them and runs, in order and each on the
survivors of the previous stage: validity (survivors: valid samples), matching keys + novelty against the cached
reference index, stability (CHGNet), condition adherence and fingerprints. Everything that needs all samples at
once (uniqueness, the hull, coverage) happens afterwards in the main process (`mmcrystal.evaluation.aggregate`).

Results are written per chunk (``<out>/chunks/chunk_<n>.pkl``) under a content hash of the chunk's records, targets
and settings, so an interrupted evaluation reruns only the chunks it had not finished.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmcrystal.evaluation.adherence import ConditionTargets, adherence_records
from mmcrystal.evaluation.fingerprints import composition_fingerprint, structure_fingerprint
from mmcrystal.evaluation.inputs import SampleRecord, parse_sample
from mmcrystal.evaluation.matching import ReferenceIndex, bucket_key, compact, reduce_for_matching
from mmcrystal.evaluation.protocol import MatcherTolerances, content_hash
from mmcrystal.evaluation.stability import ChgnetPotential, RelaxConfig, stability_records
from mmcrystal.evaluation.validity import ValidityConfig, validity_record

__all__ = ["EvalSettings", "ChunkTask", "process_chunk", "chunk_path", "load_chunk", "save_chunk"]

log = logging.getLogger(__name__)
CHUNK_VERSION = 1
STAGES = ("validity", "matching", "stability", "adherence", "distribution")


@dataclass(frozen=True)
class EvalSettings:
    """Settings of the per-chunk work (picklable; their hash is part of every chunk hash)."""

    stages: tuple[str, ...] = STAGES
    validity: ValidityConfig = field(default_factory=ValidityConfig)
    tolerances: MatcherTolerances = field(default_factory=MatcherTolerances)
    by_spacegroup: bool = False
    bucket_symprec: float = 0.1
    index_path: str | None = None
    index_hash: str | None = None
    relax: RelaxConfig = field(default_factory=RelaxConfig)
    symprec: float = 0.1
    angle_tolerance: float = 5.0
    property_tolerance: float | None = None
    fingerprint_symprec: float | None = 0.01
    torch_threads: int = 1

    def digest(self) -> str:
        return content_hash(CHUNK_VERSION, asdict(self), length=32)


@dataclass
class ChunkTask:
    """One chunk: its records, their targets, the settings and optional evaluation-only callables."""

    number: int
    records: list[SampleRecord]
    targets: list[ConditionTargets | None]
    settings: EvalSettings
    property_model: Any = None
    pattern_fn: Callable | None = None

    def digest(self) -> str:
        targets = [None if t is None else repr(asdict(t)) for t in self.targets]
        extras = [type(self.property_model).__qualname__, getattr(self.pattern_fn, "__qualname__", None)]
        return content_hash([r.payload_text() for r in self.records], targets, self.settings.digest(), extras)


_INDEX_CACHE: dict[str, ReferenceIndex] = {}


def _reference_index(settings: EvalSettings) -> ReferenceIndex | None:
    if settings.index_path is None:
        return None
    if settings.index_path not in _INDEX_CACHE:
        with open(settings.index_path, "rb") as handle:
            _INDEX_CACHE.clear()  # one index per process at a time
            _INDEX_CACHE[settings.index_path] = pickle.load(handle)
    return _INDEX_CACHE[settings.index_path]


def _describe(structure) -> dict[str, Any]:
    comp = structure.composition
    return {
        "formula": comp.reduced_formula,
        "n_atoms": len(structure),
        "n_elements": len(comp.elements),
        "chemsys": comp.chemical_system,
        "density": float(structure.density),  # g/cm^3
        "volume_per_atom": float(structure.volume / len(structure)),  # Å^3
    }


class _Clock:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}

    def run(self, name: str, fn: Callable, *args):
        start = time.process_time()
        try:
            return fn(*args)
        finally:
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - start


def _matching(rows, structures, alive, settings, out) -> None:
    index = _reference_index(settings)
    for i in alive:
        reduced = reduce_for_matching(structures[i], settings.tolerances.primitive_cell)
        key = bucket_key(reduced, settings.by_spacegroup, settings.bucket_symprec)
        rows[i]["bucket"] = key
        out["compacts"][rows[i]["row"]] = (key, compact(reduced))
        if index is not None:
            match = index.find_match(reduced, key, settings.tolerances)
            rows[i].update(novel=match is None, reference_match=match or "")


def _stability(rows, structures, alive, settings, out) -> dict[str, float]:
    potential = ChgnetPotential(settings.relax)
    for i, (row, scored) in zip(alive, stability_records([structures[i] for i in alive], potential), strict=True):
        rows[i].update(row)
        if scored is not None:
            out["scored"][rows[i]["row"]] = compact(scored)
    return potential.counters()


def _adherence(rows, structures, alive, task: ChunkTask) -> None:
    s = task.settings
    records = adherence_records(
        [structures[i] for i in alive],
        [task.targets[i] for i in alive],
        s.symprec,
        s.angle_tolerance,
        task.property_model,
        s.property_tolerance,
        task.pattern_fn,
    )
    for i, extra in zip(alive, records, strict=True):
        rows[i].update(extra)


def _fingerprints(rows, structures, settings, out) -> None:
    for i, structure in enumerate(structures):
        if structure is None or not rows[i].get("struct_valid", True):
            continue
        row = rows[i]["row"]
        try:
            out["comp_fp"][row] = composition_fingerprint(structure.composition)
            out["struct_fp"][row] = structure_fingerprint(structure, settings.fingerprint_symprec)
        except Exception as exc:  # noqa: BLE001 - CrystalNN fails on some cells; counted as "no fingerprint"
            out["comp_fp"].pop(row, None)
            rows[i]["fingerprint_error"] = f"{type(exc).__name__}: {str(exc)[:120]}"


def process_chunk(task: ChunkTask) -> dict[str, Any]:
    """Run the per-structure part of every requested stage on one chunk (module docstring)."""
    s, clock = task.settings, _Clock()
    out: dict[str, Any] = {"compacts": {}, "scored": {}, "struct_fp": {}, "comp_fp": {}, "potential": {}}
    rows, structures = [], []
    for record in task.records:
        structure, reason = clock.run("parse", parse_sample, record)
        row = {"row": record.index, "id": record.id, "location": record.location, "status": "ok"}
        if structure is None:
            row.update(status="skipped", skip_reason=reason)
            log.warning("skipping sample %s (%s): %s", record.id, record.location, reason)
        else:
            row.update(_describe(structure))
        rows.append(row)
        structures.append(structure)
    alive = [i for i, st in enumerate(structures) if st is not None]
    if "validity" in s.stages:
        for i in alive:
            rows[i].update(clock.run("validity", validity_record, structures[i], s.validity))
        alive = [i for i in alive if rows[i]["valid"]]
    if "matching" in s.stages:
        clock.run("matching", _matching, rows, structures, alive, s, out)
    if "stability" in s.stages and alive:
        _set_threads(s.torch_threads)
        out["potential"] = clock.run("stability", _stability, rows, structures, alive, s, out)
    if "adherence" in s.stages:
        clock.run("adherence", _adherence, rows, structures, alive, task)
    if "distribution" in s.stages:
        clock.run("distribution", _fingerprints, rows, structures, s, out)
    out.update(rows=rows, cpu=clock.cpu, number=task.number, n_records=len(task.records))
    return out


def _set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def chunk_path(out_dir: str | Path, number: int) -> Path:
    return Path(out_dir) / "chunks" / f"chunk_{number:06d}.pkl"


def load_chunk(out_dir: str | Path, number: int, digest: str) -> dict[str, Any] | None:
    """A finished chunk's result when its file exists with the same content hash, else None."""
    path = chunk_path(out_dir, number)
    if not path.exists():
        return None
    try:
        with open(path, "rb") as handle:
            saved = pickle.load(handle)
    except Exception:  # noqa: BLE001 - a truncated file (killed mid-write elsewhere) is recomputed
        return None
    return saved["result"] if saved.get("hash") == digest else None


def save_chunk(out_dir: str | Path, number: int, digest: str, result: dict[str, Any]) -> None:
    """Write atomically (temporary name + rename), so a killed run never leaves a half-written chunk."""
    path = chunk_path(out_dir, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        pickle.dump({"hash": digest, "result": result}, handle, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
