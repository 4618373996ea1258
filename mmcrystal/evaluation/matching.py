"""Stage 2, uniqueness among samples and novelty against a reference set, with pymatgen ``StructureMatcher``.

Pairwise fits are the expensive part (3-11 ms each), so structures are first put into buckets and only
structures in the same bucket are ever fitted:

- by reduced formula (always). ``StructureMatcher`` with its default species comparator returns "no match" for
  two structures whose fractional compositions differ before doing any work, so this bucketing loses nothing;
- optionally also by space group (spglib, ``symprec``). This is a heuristic: two structures within the matcher's
  tolerances can be assigned different space groups (a slightly distorted copy), and would then be called
  distinct. Off by default; it speeds up large buckets (many polymorphs of one formula).

Every structure is reduced once (Niggli cell, then primitive cell when ``primitive_cell`` is set, exactly the
reduction ``StructureMatcher`` does inside every ``fit``) and fits then skip the reduction
(``skip_structure_reduction=True``), as pymatgen's own ``group_structures`` does. The reference index (bucket ->
reduced structures) is built once and cached on disk under a content hash of the reference records and the
reduction settings, so a 12.5k-structure MP-20 reference is parsed and reduced only the first time.

Uniqueness: within a bucket, samples are taken in input order; each one is fitted against the first member of
every group found so far and joins the first group it matches (``fit(first_member, sample)``, as
``group_structures``). The first member of a group is "unique", later members are duplicates of it. Novelty:
a sample is novel when it fits no reference structure of its bucket (``fit(reference, sample)``).
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmcrystal.evaluation.inputs import SampleRecord, iter_sample_records, parse_sample, records_hash
from mmcrystal.evaluation.protocol import MatcherTolerances

__all__ = [
    "Compact",
    "compact",
    "from_compact",
    "reduce_for_matching",
    "bucket_key",
    "ReferenceIndex",
    "index_entries",
    "load_or_build_index",
    "find_duplicates",
    "structures_match",
]

log = logging.getLogger(__name__)
INDEX_VERSION = 1

# (lattice (3, 3) Å, atomic numbers (N,), fractional coordinates (N, 3)): small to pickle and to send to workers.
Compact = tuple[np.ndarray, np.ndarray, np.ndarray]


def compact(structure) -> Compact:
    """Structure -> (lattice, atomic numbers, fractional coordinates) arrays (species become elements)."""
    numbers = np.array([site.specie.Z for site in structure], dtype=np.int16)
    return (
        np.asarray(structure.lattice.matrix, dtype=float),
        numbers,
        np.asarray(structure.frac_coords, dtype=float),
    )


def from_compact(c: Compact):
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice(c[0]), c[1].astype(int).tolist(), c[2])


def reduce_for_matching(structure, primitive_cell: bool = True):
    """Niggli cell, then primitive cell: the reduction ``StructureMatcher.fit`` applies to both inputs."""
    reduced = structure.get_reduced_structure(reduction_algo="niggli")
    return reduced.get_primitive_structure() if primitive_cell else reduced


def bucket_key(structure, by_spacegroup: bool = False, symprec: float = 0.1) -> str:
    """Reduced formula, plus ``|<space group number>`` when bucketing by space group."""
    key = structure.composition.reduced_formula
    if by_spacegroup:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        try:
            key += f"|{SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number()}"
        except Exception:  # noqa: BLE001 - spglib failure: its own bucket, still compared within it
            key += "|?"
    return key


@functools.lru_cache(maxsize=8)
def _matcher(tolerances: MatcherTolerances):
    return tolerances.matcher()


def structures_match(reference, candidate, tolerances: MatcherTolerances) -> bool:
    """``fit(reference, candidate)`` on pre-reduced structures; a matcher exception counts as no match."""
    try:
        return bool(_matcher(tolerances).fit(reference, candidate, skip_structure_reduction=True))
    except Exception as exc:  # noqa: BLE001 - pymatgen raises on degenerate lattices; never abort an evaluation
        log.debug("StructureMatcher.fit failed (%s); counted as no match", exc)
        return False


@dataclass
class ReferenceIndex:
    """Reduced reference structures by bucket key.

    Attributes:
        buckets: key -> [(reference id, compact reduced structure)].
        hash: Content hash of the reference records and reduction settings (the cache file name).
        n_structures: Reference structures indexed.
        n_skipped: Reference records that could not be parsed (logged when the index was built).
        primitive_cell: Whether structures were reduced to primitive cells.
        by_spacegroup: Whether keys include the space group.
        symprec: spglib tolerance (Å) of the space-group keys.
        sources: Paths the records came from.
    """

    buckets: dict[str, list[tuple[str, Compact]]] = field(default_factory=dict)
    hash: str = ""
    n_structures: int = 0
    n_skipped: int = 0
    primitive_cell: bool = True
    by_spacegroup: bool = False
    symprec: float = 0.1
    sources: list[str] = field(default_factory=list)

    def find_match(self, reduced, key: str, tolerances: MatcherTolerances) -> str | None:
        """Id of the first reference structure that matches a (reduced) structure, else None."""
        entries = self.buckets.get(key, ())
        for (ref_id, _), ref in zip(entries, _bucket_structures(self, key), strict=True):
            if structures_match(ref, reduced, tolerances):
                return ref_id
        return None

    def describe(self) -> dict:
        return {
            "sources": self.sources,
            "n_structures": self.n_structures,
            "n_skipped": self.n_skipped,
            "hash": self.hash,
            "n_buckets": len(self.buckets),
            "primitive_cell": self.primitive_cell,
            "bucketing": "reduced formula" + (f" + space group (symprec={self.symprec})" if self.by_spacegroup else ""),
        }


# Per-process cache of rebuilt reference structures: (index hash, bucket key) -> [Structure].
_BUCKET_CACHE: dict[tuple[str, str], list] = {}
_BUCKET_CACHE_LIMIT = 50_000  # structures held before the cache is cleared


def _bucket_structures(index: ReferenceIndex, key: str) -> list:
    cached = _BUCKET_CACHE.get((index.hash, key))
    if cached is None:
        if sum(len(v) for v in _BUCKET_CACHE.values()) > _BUCKET_CACHE_LIMIT:
            _BUCKET_CACHE.clear()
        cached = [from_compact(c) for _, c in index.buckets.get(key, ())]
        _BUCKET_CACHE[(index.hash, key)] = cached
    return cached


def index_entries(
    records: Sequence[SampleRecord], primitive_cell: bool, by_spacegroup: bool, symprec: float
) -> list[tuple[str, str | None, Compact | None]]:
    """(id, bucket key, compact reduced structure) per record; key None when it could not be parsed/reduced."""
    out = []
    for record in records:
        structure, reason = parse_sample(record)
        if structure is None:
            out.append((record.id, None, None))
            continue
        try:
            reduced = reduce_for_matching(structure, primitive_cell)
            out.append((record.id, bucket_key(reduced, by_spacegroup, symprec), compact(reduced)))
        except Exception:  # noqa: BLE001 - a reference that cannot be reduced is skipped (logged by caller)
            out.append((record.id, None, None))
    return out


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load_or_build_index(
    paths: str | Sequence[str],
    cache_dir: str | Path,
    primitive_cell: bool = True,
    by_spacegroup: bool = False,
    symprec: float = 0.1,
    executor=None,
    chunk_size: int = 500,
) -> ReferenceIndex:
    """The reference index of ``paths``, from ``cache_dir`` when an index of the same content exists.

    Args:
        paths: Reference files / folders / globs (anything `iter_sample_records` reads).
        cache_dir: Folder of cached indices (``reference_index/<hash>.pkl``).
        primitive_cell: Reduce to primitive cells (must equal the matcher's setting).
        by_spacegroup: Add the space group to bucket keys (see module docstring).
        symprec: spglib tolerance in Å for the space-group keys.
        executor: Optional ``concurrent.futures`` executor to reduce structures in parallel.
        chunk_size: Records per parallel task.
    """
    records = list(iter_sample_records(paths))
    sources = [str(p) for p in ([paths] if isinstance(paths, str) else paths)]
    digest = records_hash(records, "reference-index", INDEX_VERSION, primitive_cell, by_spacegroup, symprec)
    path = Path(cache_dir) / "reference_index" / f"{digest}.pkl"
    if path.exists():
        with open(path, "rb") as handle:
            index = pickle.load(handle)
        log.info("reference index %s loaded from cache (%d structures)", digest[:12], index.n_structures)
        return index
    task = functools.partial(index_entries, primitive_cell=primitive_cell, by_spacegroup=by_spacegroup, symprec=symprec)
    chunks = list(_chunks(records, chunk_size))
    results = list(executor.map(task, chunks)) if executor is not None else [task(c) for c in chunks]
    index = ReferenceIndex(hash=digest, primitive_cell=primitive_cell, by_spacegroup=by_spacegroup, symprec=symprec)
    index.sources = sources
    buckets: dict[str, list] = defaultdict(list)
    for (ref_id, key, c), record in zip((e for chunk in results for e in chunk), records, strict=True):
        if key is None:
            index.n_skipped += 1
            log.warning("reference %s (%s) could not be parsed/reduced; skipped", ref_id, record.location)
            continue
        buckets[key].append((ref_id, c))
    index.buckets, index.n_structures = dict(buckets), sum(len(v) for v in buckets.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        pickle.dump(index, handle, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    log.info("reference index %s built: %d structures, %d skipped", digest[:12], index.n_structures, index.n_skipped)
    return index


def find_duplicates(items: Sequence[tuple[int, Compact]], tolerances: MatcherTolerances) -> dict[int, int | None]:
    """Greedy grouping of one bucket's samples (module docstring).

    Args:
        items: (row, compact reduced structure) in input order, all with the same bucket key.
        tolerances: Matcher tolerances.

    Returns:
        row -> row of the first member of its group (None for first members, i.e. unique samples).
    """
    firsts: list[tuple[int, object]] = []
    out: dict[int, int | None] = {}
    for row, c in items:
        structure = from_compact(c)
        out[row] = next((r for r, s in firsts if structures_match(s, structure, tolerances)), None)
        if out[row] is None:
            firsts.append((row, structure))
    return out
