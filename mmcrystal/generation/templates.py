"""`TemplateLibrary`: symmetry templates (`mmcrystal.diffusion.symmetry`) of known crystals, chosen per sample.

    library = TemplateLibrary.from_shards("runs/mp40_text_train")          # the decoder's own training split
    template = library.choose(spacegroups_of("tetragonal"), Composition("CaGe3"), seed=7, max_atoms=40)

Which crystals. Templates must come from data the decoder was trained on (its prepared shards' train split, or
structures the user trusts), never from the split a benchmark tests on: a template is a real crystal's space group
and Wyckoff orbits, and one taken from the test structure would hand the answer over.

Choosing a template for a formula and a set of allowed space groups (a space group, or a crystal system's range):
  1. crystals of an allowed space group whose composition has the formula's pattern (sorted element counts
     proportional: AB3 for CaGe3), at most `max_atoms` atoms: the formula's elements take the template's sites
     element by element, matched by (count, Pauling electronegativity) rank, so O goes where O-like anions were;
  2. otherwise crystals of an allowed space group with a whole number of formula units whose orbits can be split
     among the formula's elements with the right counts (exact subset sums, orbits shuffled by the seed): a
     Wyckoff skeleton re-decorated, as DiffCSP++ does for de novo generation;
  3. otherwise None: the caller samples that crystal unconstrained and counts it.
Within a tier the choice is uniform over candidates, drawn with `seed`, so space groups follow the training data's
frequencies for that formula and system. A crystal spglib cannot standardise (disordered-looking, overlapping) is
logged once and skipped.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

import numpy as np

from mmcrystal.diffusion.symmetry import SymmetryTemplate, template_from_structure

__all__ = ["CRYSTAL_SYSTEMS", "TemplateLibrary", "crystal_system_in_prompt", "spacegroups_of"]

log = logging.getLogger(__name__)

# international space-group numbers of each crystal system (International Tables A)
CRYSTAL_SYSTEMS = {
    "triclinic": (1, 2),
    "monoclinic": (3, 15),
    "orthorhombic": (16, 74),
    "tetragonal": (75, 142),
    "trigonal": (143, 167),
    "hexagonal": (168, 194),
    "cubic": (195, 230),
}


def spacegroups_of(symmetry: int | str) -> frozenset[int]:
    """Allowed space-group numbers of a space group (number or Hermann-Mauguin symbol) or a crystal system name
    ("cubic"; "rhombohedral" counts as trigonal)."""
    text = str(symmetry).strip().lower()
    text = "trigonal" if text == "rhombohedral" else text
    if text in CRYSTAL_SYSTEMS:
        lo, hi = CRYSTAL_SYSTEMS[text]
        return frozenset(range(lo, hi + 1))
    from mmcrystal.generation.conditions import parse_spacegroup

    return frozenset({parse_spacegroup(symmetry)})


def crystal_system_in_prompt(prompt: str) -> str | None:
    """The crystal system a caption names ("Tetragonal CaGe3 crystal structure" -> "tetragonal"), or None. A caption
    naming two systems (rare: "cubic ... distorted to tetragonal") gives the first."""
    words = prompt.lower().replace("-", " ").split()
    found = [(i, name) for i, w in enumerate(words) for name in (*CRYSTAL_SYSTEMS, "rhombohedral")
             if w.strip(".,;:()") == name]  # fmt: skip
    if not found:
        return None
    name = min(found)[1]
    return "trigonal" if name == "rhombohedral" else name


def _pattern(counts: Iterable[int]) -> tuple[int, ...]:
    counts = [int(c) for c in counts]
    g = reduce(math.gcd, counts)
    return tuple(sorted(c // g for c in counts))


@dataclass
class _Entry:
    id: str
    spacegroup: int
    num_atoms: int
    counts: dict[int, int]  # Z -> atoms in the cell
    structure: object
    template: SymmetryTemplate | None = None
    failed: bool = False


@dataclass
class TemplateLibrary:
    """Known crystals indexed by space group, with their templates built on first use.

    Attributes:
        entries: The crystals.
        symprec: spglib tolerance (Å) for standardising a crystal into its template.
        source: Where the crystals came from (recorded with samples).
    """

    entries: list[_Entry] = field(default_factory=list)
    symprec: float = 0.1
    source: str = ""

    def __post_init__(self) -> None:
        self._by_spacegroup: dict[int, list[_Entry]] = {}
        for entry in self.entries:
            self._by_spacegroup.setdefault(entry.spacegroup, []).append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def structure(self, source: str):
        """The stored crystal (pymatgen `Structure`) a template came from (`SymmetryTemplate.source`)."""
        if not hasattr(self, "_by_id"):
            self._by_id = {entry.id: entry for entry in self.entries}
        if source not in self._by_id:
            raise KeyError(f"no crystal {source!r} in the template library ({self.source})")
        return self._by_id[source].structure

    @classmethod
    def from_structures(
        cls, structures: Iterable[tuple[str, object]], symprec: float = 0.1, source: str = "structures"
    ) -> TemplateLibrary:
        """From `(id, pymatgen Structure)` pairs; space groups from spglib at `symprec` (Å)."""
        from mmcrystal.evaluation.adherence import symmetry_info

        entries = []
        for ident, structure in structures:
            number, _ = symmetry_info(structure, symprec=symprec)
            if number is None:
                log.info("template library: %s skipped (spglib found no space group)", ident)
                continue
            entries.append(_entry(ident, number, structure))
        return cls(entries, symprec, source)

    @classmethod
    def from_shards(
        cls, root: str | Path, split: str = "train", symprec: float | None = None, exclude: Iterable[str] = ()
    ) -> TemplateLibrary:
        """From a prepared data folder (`mmcrystal prepare`): every record of `split` whose id is not in `exclude`
        (a benchmark's test ids: never take the answer as a template), with the space group that prepare recorded
        (its symprec unless `symprec` is given)."""
        import json

        from pymatgen.core import Lattice, Structure

        from mmcrystal.data.shards import decode_sample, iter_shard

        root = Path(root)
        manifest = json.loads((root / "manifest.json").read_text())
        if split not in manifest.get("splits", {}):
            raise ValueError(f"{root}: no {split!r} split (has {sorted(manifest.get('splits', {}))})")
        prepared = float(manifest.get("config", {}).get("symprec", 0.1))
        excluded = {str(i) for i in exclude}
        entries, unknown, left_out = [], 0, 0
        for shard in manifest["splits"][split]["shards"]:
            for _, files in iter_shard(str(root / shard["file"])):
                sample = decode_sample(files, ("z", "frac", "lattice"))
                if str(sample["meta"]["id"]) in excluded:
                    left_out += 1
                    continue
                number = int(sample["meta"].get("symmetry", {}).get("spacegroup", 0))
                if number < 1:
                    unknown += 1
                    continue
                structure = Structure(Lattice(sample["lattice"]), sample["z"].astype(int).tolist(), sample["frac"])
                entries.append(_entry(sample["meta"]["id"], number, structure))
        if unknown:
            log.info("template library %s: %d %s records without a space group skipped", root, unknown, split)
        if left_out:
            log.info("template library %s: %d %s records left out (excluded ids)", root, left_out, split)
        if not entries:
            raise ValueError(f"{root}: no {split} record has a space group; prepare records them (symprec)")
        source = f"{root} ({split}" + (f", {left_out} excluded ids left out)" if left_out else ")")
        return cls(entries, prepared if symprec is None else symprec, source)

    def _template(self, entry: _Entry) -> SymmetryTemplate | None:
        if entry.template is None and not entry.failed:
            try:
                entry.template = template_from_structure(entry.structure, self.symprec, source=entry.id)
            except ValueError as exc:
                log.info("template library: %s skipped (%s)", entry.id, exc)
                entry.failed = True
        return entry.template

    def choose(
        self, spacegroups: Iterable[int], formula, seed: int, max_atoms: int | None = None
    ) -> SymmetryTemplate | None:
        """A template for `formula` (a pymatgen `Composition`; any multiple) in one of `spacegroups`, its species
        set to the formula's elements, or None (module docstring for the rules)."""
        rng = random.Random(seed)
        reduced, _ = formula.get_reduced_composition_and_factor()
        want = {el.Z: int(round(n)) for el, n in reduced.items()}
        unit = sum(want.values())
        pool = [e for sg in sorted(set(spacegroups)) for e in self._by_spacegroup.get(sg, [])
                if e.num_atoms % unit == 0 and (max_atoms is None or e.num_atoms <= max_atoms)]  # fmt: skip
        same = [e for e in pool if _pattern(e.counts.values()) == _pattern(want.values())]
        for candidates, assign in ((same, _assign_by_rank), (pool, _assign_by_orbits)):
            order = list(candidates)
            rng.shuffle(order)
            for entry in order[:256]:  # bounded work per sample: later tiers rarely need more tries
                template = self._template(entry)
                if template is None:
                    continue
                species = assign(template, want, rng)
                if species is not None:
                    return template.with_species(species)
        return None


def _entry(ident: str, spacegroup: int, structure) -> _Entry:
    counts: dict[int, int] = {}
    for site in structure:
        counts[site.specie.Z] = counts.get(site.specie.Z, 0) + 1
    return _Entry(str(ident), int(spacegroup), len(structure), counts, structure)


def _electronegativity(z: int) -> float:
    from pymatgen.core import Element

    x = Element.from_Z(z).X
    return float(x) if x == x else 0.0  # NaN (noble gases) sorts first


def _assign_by_rank(template: SymmetryTemplate, want: dict[int, int], rng: random.Random) -> np.ndarray | None:
    """Species per template atom when the template has the formula's pattern: elements matched by (count,
    electronegativity) rank."""
    have: dict[int, int] = {}
    for z in template.species.tolist():
        have[z] = have.get(z, 0) + 1
    scale = template.num_atoms // sum(want.values())
    if sorted(have.values()) != sorted(c * scale for c in want.values()):
        return None  # the standardised cell may be smaller than the stored one
    key = lambda pair: (pair[1], _electronegativity(pair[0]))  # noqa: E731
    mapping = {old: new for (old, _), (new, _) in zip(sorted(have.items(), key=key),
                                                      sorted(((z, c * scale) for z, c in want.items()), key=key),
                                                      strict=True)}  # fmt: skip
    return np.array([mapping[z] for z in template.species.tolist()])


def _assign_by_orbits(template: SymmetryTemplate, want: dict[int, int], rng: random.Random) -> np.ndarray | None:
    """Species per template atom from an exact split of the orbits among the elements (backtracking over orbits,
    largest first, shuffled within a size), or None when no split exists."""
    scale = template.num_atoms // sum(want.values())
    need = {z: c * scale for z, c in want.items()}
    sizes = template.orbit_sizes
    orbits = list(range(len(sizes)))
    rng.shuffle(orbits)
    orbits.sort(key=lambda o: -sizes[o])
    elements = list(need)
    owner: dict[int, int] = {}
    budget = [10_000]

    def place(i: int) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if i == len(orbits):
            return all(v == 0 for v in need.values())
        rng.shuffle(elements)
        for z in list(elements):
            if need[z] >= sizes[orbits[i]]:
                need[z] -= sizes[orbits[i]]
                owner[orbits[i]] = z
                if place(i + 1):
                    return True
                need[z] += sizes[orbits[i]]
        return False

    if not place(0):
        return None
    return np.array([owner[o] for o in template.orbit.tolist()])


def describe(template: SymmetryTemplate | None) -> dict | None:
    """JSON record of a chosen template (stored with each sample)."""
    if template is None:
        return None
    return {"source": template.source, "spacegroup": template.spacegroup, "num_atoms": template.num_atoms}
