"""Convex hulls for E_hull: a self-consistent hull scored with the evaluation potential, or user-supplied entries.

a. Self-consistent (`build_self_consistent_hull`): reference structures (e.g. the training set, taken from the
   `ReferenceIndex` so they are parsed once) scored with the same potential and settings as the samples. Only
   references whose element set lies inside some sample's chemical system are needed; each energy is cached on
   disk under the hash of the structure and of the scoring settings (model version, relaxed or not, optimizer,
   fmax, steps), so a reference is scored once across runs, and the hull hash is the hash of the
   (structure hash, energy) pairs used. Elemental end points come from elemental structures in the reference set
   and, with ``elemental_prototypes``, from ASE's reference crystal of each element (``ase.build.bulk``: bcc Fe,
   fcc Ni, hcp Ti, ...) scored the same way. A prototype is not always the ground state (alpha-Mn or dhcp La are
   not built), which can put compounds of such elements too low. Elements with no elemental entry at all (B, P, S,
   Mn, I, ... unless the references hold them) make a hull impossible: such samples get
   ``hull_status = "no_hull: missing <elements>"`` and are counted, never dropped silently. A hull is only as good
   as its reference: where the reference holds no compound of a chemical system, E_hull is simply the formation
   energy from the elements (far below zero for, e.g., fluorides); ``hull_n_compounds`` reports how many competing
   compounds each sample's hull had, and ``n_with_hull_but_no_competing_compound`` counts the bare cases.
b. User-supplied (`load_user_hull`): a JSON file of pymatgen entries (``PDEntry`` / ``ComputedEntry`` dicts, a list
   or ``{"entries": [...]}``) or a serialised ``PhaseDiagram``. Energies must be on the potential's scale (for
   CHGNet: MP2020-corrected GGA/GGA+U), else E_hull is meaningless.

E_hull (eV/atom) is ``PhaseDiagram.get_decomp_and_e_above_hull(allow_negative=True)`` of the sample's composition
and energy against the entries of its chemical system (one diagram per chemical system, built on first use);
negative values (below the reference hull) are kept as they are.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcrystal.evaluation.matching import Compact, ReferenceIndex, compact, from_compact
from mmcrystal.evaluation.protocol import content_hash
from mmcrystal.evaluation.stability import ChgnetPotential, RelaxConfig, structure_hash

__all__ = [
    "EnergyCache",
    "elemental_prototypes",
    "HullReference",
    "load_user_hull",
    "score_structures",
    "build_self_consistent_hull",
]

log = logging.getLogger(__name__)
HULL_VERSION = 1


class EnergyCache:
    """Reference energies (eV/atom) under one scoring setting, in ``<cache_dir>/hull_energies/<key>.jsonl``.

    Only the main process writes; lines are appended and flushed, so an interrupted build keeps what it scored.
    """

    def __init__(self, cache_dir: str | Path, scoring_key: str):
        self.path = Path(cache_dir) / "hull_energies" / f"{scoring_key}.jsonl"
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a killed run: that reference is rescored
                    continue
                self.entries[item["hash"]] = item

    def add(self, items: Sequence[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            for item in items:
                self.entries[item["hash"]] = item
                handle.write(json.dumps(item) + "\n")


def elemental_prototypes(elements: Sequence[str]) -> list[tuple[str, Any]]:
    """(id, Structure) of ASE's reference crystal (``ase.build.bulk``) for each element that has one."""
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    out = []
    for symbol in sorted(set(elements)):
        try:
            out.append((f"ase-bulk:{symbol}", AseAtomsAdaptor.get_structure(bulk(symbol))))
        except Exception:  # noqa: BLE001 - ASE has no simple bulk reference for gases, B, P, S, Mn, ...
            continue
    return out


@dataclass
class HullReference:
    """Competing phases for E_hull, grouped by element set.

    Attributes:
        kind: ``self-consistent`` or ``user``.
        source: Reference paths or the user file.
        hash: Content hash of the entries (ids, compositions, energies).
        entries: pymatgen ``PDEntry`` objects (total energies in eV).
        settings: Scoring settings of a self-consistent hull.
    """

    kind: str
    source: list[str]
    hash: str
    entries: list = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_elements: dict[frozenset, list] = defaultdict(list)
        for entry in self.entries:
            self._by_elements[frozenset(el.symbol for el in entry.composition.elements)].append(entry)
        self._diagrams: dict[frozenset, Any] = {}

    @property
    def elements_with_endpoints(self) -> set[str]:
        return {next(iter(k)) for k in self._by_elements if len(k) == 1}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "hash": self.hash,
            "n_entries": len(self.entries),
            "elements_with_endpoints": sorted(self.elements_with_endpoints),
            "correction_scheme": "none applied here (CHGNet energies are on the MP2020-corrected scale)",
            **({"scoring": self.settings} if self.settings else {}),
        }

    def _entries_within(self, chemsys: frozenset) -> list:
        entries = []
        for size in range(1, len(chemsys) + 1):
            for subset in itertools.combinations(sorted(chemsys), size):
                entries += self._by_elements.get(frozenset(subset), [])
        return entries

    def _diagram(self, chemsys: frozenset):
        from pymatgen.analysis.phase_diagram import PhaseDiagram

        if chemsys not in self._diagrams:
            self._diagrams[chemsys] = PhaseDiagram(self._entries_within(chemsys))
        return self._diagrams[chemsys]

    def n_compounds(self, elements) -> int:
        """Reference entries with two or more elements inside a chemical system. With none, E_hull is just the
        formation energy from the elements: a sparse reference makes E_hull too low, so this is reported."""
        return sum(len(e.composition.elements) > 1 for e in self._entries_within(frozenset(elements)))

    def e_above_hull(self, composition, energy_per_atom: float) -> tuple[float | None, str]:
        """(E_hull in eV/atom or None, status) of a composition at an energy per atom."""
        from pymatgen.analysis.phase_diagram import PDEntry

        chemsys = frozenset(el.symbol for el in composition.elements)
        missing = sorted(chemsys - self.elements_with_endpoints)
        if missing:
            return None, "no_hull: missing " + "-".join(missing)
        try:
            entry = PDEntry(composition, energy_per_atom * composition.num_atoms)
            _, e_hull = self._diagram(chemsys).get_decomp_and_e_above_hull(entry, allow_negative=True)
        except Exception as exc:  # noqa: BLE001 - a degenerate diagram is a counted "no hull", never a crash
            return None, f"no_hull: {type(exc).__name__}"
        return float(e_hull), "ok"


def load_user_hull(path: str | Path) -> HullReference:
    """Entries from a JSON list of pymatgen entry dicts, ``{"entries": [...]}``, or a ``PhaseDiagram`` dict."""
    from monty.json import MontyDecoder
    from pymatgen.analysis.phase_diagram import PDEntry

    text = Path(path).read_text()
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("all_entries") or data.get("entries") or []
    decoded = [MontyDecoder().process_decoded(item) for item in data]
    entries = [PDEntry(e.composition, e.energy, name=getattr(e, "name", None)) for e in decoded]
    return HullReference("user", [str(path)], content_hash(text, length=32), entries)


def score_structures(items: Sequence[tuple[str, str, Compact]], config: RelaxConfig) -> tuple[list[dict], dict]:
    """Worker task: score (hash, id, compact structure) items; returns cache lines and potential counters."""
    potential = ChgnetPotential(config)
    structures = [from_compact(c) for _, _, c in items]
    results = potential.score(structures)
    lines = []
    for (digest, ref_id, _), s, result in zip(items, structures, results, strict=True):
        if "error" in result:
            log.warning("reference %s could not be scored: %s", ref_id, result["error"])
            continue
        formula = s.composition.formula
        lines.append({"hash": digest, "id": ref_id, "formula": formula, "e": result["energy_per_atom"]})
    return lines, potential.counters()


def _needed_references(index: ReferenceIndex, chemical_systems: Iterable[frozenset]) -> list[tuple[str, Compact]]:
    from pymatgen.core import Composition

    systems = [frozenset(c) for c in chemical_systems]
    needed = []
    for key, entries in index.buckets.items():
        elements = frozenset(el.symbol for el in Composition(key.split("|")[0]).elements)
        if any(elements <= system for system in systems):
            needed += entries
    return needed


def build_self_consistent_hull(
    index: ReferenceIndex,
    chemical_systems: Iterable[Iterable[str]],
    config: RelaxConfig,
    cache_dir: str | Path,
    elemental_refs: bool = True,
    executor=None,
    chunk_size: int = 64,
) -> tuple[HullReference, dict[str, float]]:
    """Score (or load from cache) the references needed by ``chemical_systems``; return the hull and the counters
    of the potential calls spent on it (zero when everything came from the cache)."""
    systems = [frozenset(c) for c in chemical_systems]
    items = [(structure_hash(from_compact(c)), ref_id, c) for ref_id, c in _needed_references(index, systems)]
    if elemental_refs:
        elements = set().union(*systems) if systems else set()
        items += [(structure_hash(s), ref_id, compact(s)) for ref_id, s in elemental_prototypes(sorted(elements))]
    potential = ChgnetPotential(config)
    scoring_key = content_hash("hull-energies", HULL_VERSION, potential.info(), config.scoring_dict(), length=32)
    cache = EnergyCache(cache_dir, scoring_key)
    todo = [item for item in items if item[0] not in cache.entries]
    todo = list({item[0]: item for item in todo}.values())  # duplicates in the reference set are scored once
    counters: dict[str, float] = defaultdict(float)
    chunks = [todo[i : i + chunk_size] for i in range(0, len(todo), chunk_size)]
    task = functools.partial(score_structures, config=config)
    results = executor.map(task, chunks) if executor is not None else map(task, chunks)
    for done, (lines, calls) in enumerate(results, start=1):
        cache.add(lines)
        for k, v in calls.items():
            counters[k] += v
        log.info("hull references scored: %d / %d chunks", done, len(chunks))
    entries, used = _entries_from_cache(items, cache)
    hull = HullReference(
        "self-consistent",
        index.sources,
        content_hash(sorted(used), length=32),
        entries,
        {**potential.info(), **config.scoring_dict(), "elemental_prototypes": elemental_refs, "index": index.hash},
    )
    return hull, dict(counters)


def _entries_from_cache(items, cache: EnergyCache) -> tuple[list, list]:
    from pymatgen.analysis.phase_diagram import PDEntry
    from pymatgen.core import Composition

    entries, used, seen = [], [], set()
    for digest, ref_id, _ in items:
        line = cache.entries.get(digest)
        if line is None or digest in seen:
            continue
        seen.add(digest)
        composition = Composition(line["formula"])
        entries.append(PDEntry(composition, line["e"] * composition.num_atoms, name=ref_id))
        used.append((digest, round(line["e"], 6)))
    return entries, used
