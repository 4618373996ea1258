"""Text captions of crystals: generated from structure and properties, parsed from datasets, or from robocrys.

Generated captions (``generate_captions``) come in two steps: ``describe_structure`` extracts the facts
(``StructureFacts``: reduced formula, element names, crystal system, space group and Bravais lattice from spglib
through pymatgen's ``SpacegroupAnalyzer`` at ``symprec`` 0.1 Å by default, the Materials Project setting, number
of sites, density in g/cm³), and ``captions_from_facts`` renders them with paraphrase templates
(``CAPTION_TEMPLATES``, structurally different sentences) chosen with a seeded RNG. Every template states the
reduced formula and the crystal system. Property phrases are appended when values are given:

- band gap (eV, ``band_gap``): metal below ``METAL_GAP`` = 0.1 eV (PBE gives exactly 0 for metals; gaps this
  small are within DFT noise), insulator from ``INSULATOR_GAP`` = 3.0 eV (wide gap), semiconductor in between.
  PBE underestimates gaps, so the words describe the computed gap, not the measured one;
- formation energy (eV/atom, ``formation_energy_per_atom`` or ``formation_energy``);
- energy above the convex hull (eV/atom, ``energy_above_hull``): stable at <= 0 (within 1e-6), metastable up to
  ``METASTABLE_HULL`` = 0.1 eV/atom (a common cut-off for synthesisable phases), unstable above.

Provided captions: ``mmcrystal.data.readers.parse_captions`` reads a Chemeleon-style ``prompt`` cell (one caption, or a Python list
of captions as a string, parsed with ``ast.literal_eval``, which evaluates literals only) to be used as-is.
robocrys descriptions (``robocrys_descriptions``) are an optional step: robocrys is the ``captions`` extra, runs
in a process pool (about 6-16 s per structure) and is cached on disk by ``structure_hash``; its text is cleaned of
numpy reprs such as ``np.int64(0)`` (``clean_numpy_reprs``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

METAL_GAP = 0.1  # eV
INSULATOR_GAP = 3.0  # eV
METASTABLE_HULL = 0.1  # eV/atom
_HULL_TOL = 1e-6  # eV/atom

_CENTERING = {"P": "primitive", "I": "body-centered", "F": "face-centered", "C": "base-centered"}
_CENTERING.update({"A": "base-centered", "B": "base-centered", "R": "rhombohedral"})
_KINDS = {1: "elemental solid", 2: "binary compound", 3: "ternary compound", 4: "quaternary compound"}
_KINDS[5] = "quinary compound"


@dataclass(frozen=True)
class StructureFacts:
    """Facts about one crystal structure that captions are made of.

    Attributes:
        reduced_formula: e.g. "NaCl". elements: Symbols in formula order. element_names: e.g. ("sodium", ...).
        crystal_system: Lower case ("cubic", ..., "triclinic"). space_group_symbol: Hermann-Mauguin, e.g. "Fm-3m".
        space_group_number: 1-230. lattice_type: "cubic", "hexagonal", "rhombohedral", ...
        bravais_lattice: e.g. "face-centered cubic". num_sites: Sites in the given cell. density: g/cm³.
    """

    reduced_formula: str
    elements: tuple[str, ...]
    element_names: tuple[str, ...]
    crystal_system: str
    space_group_symbol: str
    space_group_number: int
    lattice_type: str
    bravais_lattice: str
    num_sites: int
    density: float


def _bravais_lattice(lattice_type: str, symbol: str) -> str:
    if lattice_type in ("hexagonal", "rhombohedral", "triclinic"):
        return lattice_type
    return f"{_CENTERING.get(symbol[:1], 'primitive')} {lattice_type}"


def describe_structure(
    structure, symprec: float = 0.1, angle_tolerance: float = 5.0, symmetry: Mapping | None = None
) -> StructureFacts:
    """Extract the facts of a pymatgen Structure (symmetry with spglib at ``symprec`` Å, angles in degrees).

    ``symmetry`` may carry labels already computed at the same tolerance (``spacegroup``, ``symbol``,
    ``crystal_system``, ``lattice_type``, as `mmcrystal.data.symmetry.annotate_symmetry` stores them), which saves
    a second spglib call per structure in the prepare pipeline.
    """
    from pymatgen.core import Element

    formula = structure.composition.reduced_formula
    symbols = tuple(dict.fromkeys(re.findall(r"[A-Z][a-z]?", formula)))
    keys = ("spacegroup", "symbol", "crystal_system", "lattice_type")
    if symmetry is None or not all(k in symmetry for k in keys):
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        analyzer = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance)
        symmetry = {
            "spacegroup": int(analyzer.get_space_group_number()),
            "symbol": analyzer.get_space_group_symbol(),
            "crystal_system": analyzer.get_crystal_system(),
            "lattice_type": analyzer.get_lattice_type(),
        }
    return StructureFacts(
        reduced_formula=formula,
        elements=symbols,
        element_names=tuple(Element(s).long_name.lower() for s in symbols),
        crystal_system=symmetry["crystal_system"],
        space_group_symbol=symmetry["symbol"],
        space_group_number=int(symmetry["spacegroup"]),
        lattice_type=symmetry["lattice_type"],
        bravais_lattice=_bravais_lattice(symmetry["lattice_type"], symmetry["symbol"]),
        num_sites=len(structure),
        density=float(structure.density),
    )


def classify_band_gap(gap: float) -> str:
    """ "metal" (< 0.1 eV), "semiconductor" or "insulator" (>= 3.0 eV)."""
    if gap < METAL_GAP:
        return "metal"
    return "insulator" if gap >= INSULATOR_GAP else "semiconductor"


def classify_stability(energy_above_hull: float) -> str:
    """ "stable" (<= 0 eV/atom), "metastable" (<= 0.1 eV/atom) or "unstable"."""
    if energy_above_hull <= _HULL_TOL:
        return "stable"
    return "metastable" if energy_above_hull <= METASTABLE_HULL else "unstable"


# Each template states {formula} and {system}; properties are appended as sentences.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{formula} crystallizes in the {system} space group {sg}.",
    "A {system} crystal of {formula} with space group {sg} (No. {sgn}) and {nsites} atoms in the unit cell.",
    "{Kind} {formula}, made of {elements}, adopting a {system} structure.",
    "Crystal structure of {formula}: {system}, space group {sg}, density {density} g/cm^3.",
    "The {system} phase of {formula} ({sg}) has a {lattice} lattice and a density of {density} g/cm^3.",
    "{formula} ({elements}) forms a {system} lattice with {nsites} sites per cell.",
    "Space group {sg} (#{sgn}) {system} structure of {formula}.",
    "In {formula}, {elements} atoms are arranged in a {system} crystal structure with {sg} symmetry.",
    "Built from {elements}, the {system} {kind} {formula} has {nsites} atoms per unit cell.",
    "A {lattice} lattice ({system} crystal system, {sg}) hosts the {kind} {formula}.",
    "{formula}, a {system} {kind} with space-group number {sgn}.",
    "Material: {formula}. Crystal system: {system}. Space group: {sg}. Sites: {nsites}. Density: {density} g/cm^3.",
    "Consider {formula}, which has {system} symmetry ({sg}) and a calculated density of {density} g/cm^3.",
    "{System} {formula} in space group {sg}.",
)

_GAP_PHRASES = {
    "metal": (
        "It is a metal (computed band gap {gap} eV).",
        "Electronically it is a metal, with a band gap of {gap} eV.",
        "Band gap {gap} eV: a metal.",
    ),
    "semiconductor": (
        "It is a semiconductor with a band gap of {gap} eV.",
        "A semiconductor, its band gap is {gap} eV.",
        "Band gap {gap} eV: a semiconductor.",
    ),
    "insulator": (
        "It is an insulator with a wide band gap of {gap} eV.",
        "An insulator, its band gap is {gap} eV.",
        "Band gap {gap} eV: an insulator.",
    ),
}
_FORMATION_PHRASES = (
    "Its formation energy is {ef} eV/atom.",
    "Formation energy: {ef} eV/atom.",
    "It forms with an energy of {ef} eV/atom relative to the elements.",
)
_HULL_PHRASES = {
    "stable": ("It is thermodynamically stable, on the convex hull.", "Stable: it lies on the convex hull."),
    "metastable": (
        "It is metastable, {eh} eV/atom above the convex hull.",
        "A metastable phase ({eh} eV/atom above the hull).",
    ),
    "unstable": (
        "It is unstable, {eh} eV/atom above the convex hull.",
        "An unstable phase, {eh} eV/atom above the hull.",
    ),
}
_PROPERTY_KEYS = {
    "band_gap": ("band_gap",),
    "formation_energy": ("formation_energy_per_atom", "formation_energy"),
    "energy_above_hull": ("energy_above_hull", "e_above_hull"),
}


def _property(properties: Mapping, name: str) -> float | None:
    for key in _PROPERTY_KEYS[name]:
        value = properties.get(key)
        if value is not None:
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                return value
    return None


def property_sentences(properties: Mapping | None, rng: random.Random) -> list[str]:
    """Sentences for the band gap, formation energy and hull distance present in ``properties``."""
    properties = properties or {}
    out = []
    gap = _property(properties, "band_gap")
    if gap is not None:
        out.append(rng.choice(_GAP_PHRASES[classify_band_gap(gap)]).format(gap=f"{gap:.2f}"))
    formation = _property(properties, "formation_energy")
    if formation is not None:
        out.append(rng.choice(_FORMATION_PHRASES).format(ef=f"{formation:.3f}"))
    hull = _property(properties, "energy_above_hull")
    if hull is not None:
        out.append(rng.choice(_HULL_PHRASES[classify_stability(hull)]).format(eh=f"{hull:.3f}"))
    return out


def _join_names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _template_fields(facts: StructureFacts) -> dict[str, str]:
    kind = _KINDS.get(len(facts.elements), f"{len(facts.elements)}-component compound")
    elements = _join_names(facts.element_names)
    return {
        "formula": facts.reduced_formula,
        "system": facts.crystal_system,
        "System": facts.crystal_system.capitalize(),
        "sg": facts.space_group_symbol,
        "sgn": str(facts.space_group_number),
        "nsites": str(facts.num_sites),
        "density": f"{facts.density:.2f}",
        "lattice": facts.bravais_lattice,
        "elements": elements,
        "kind": kind,
        "Kind": kind.capitalize(),
    }


def captions_from_facts(
    facts: StructureFacts, properties: Mapping | None = None, n: int = 5, seed: int = 0
) -> list[str]:
    """Render ``n`` captions from facts; distinct templates while n <= len(CAPTION_TEMPLATES), seeded."""
    rng = random.Random(seed)
    count = len(CAPTION_TEMPLATES)
    picks = rng.sample(range(count), n) if n <= count else [rng.randrange(count) for _ in range(n)]
    fields = _template_fields(facts)
    captions = []
    for index in picks:
        sentences = [CAPTION_TEMPLATES[index].format(**fields), *property_sentences(properties, rng)]
        captions.append(" ".join(sentences))
    return captions


def generate_captions(
    structure, properties: Mapping | None = None, n: int = 5, seed: int = 0, symprec: float = 0.1
) -> list[str]:
    """``n`` seeded paraphrase captions of a structure and its properties (eV, eV/atom)."""
    return captions_from_facts(describe_structure(structure, symprec=symprec), properties, n=n, seed=seed)


_NUMPY_SCALAR = re.compile(r"np\.(?:u?int|float|complex|bool|str)\w*\(\s*(['\"]?)(.*?)\1\s*\)")
_NUMPY_BOOL = re.compile(r"np\.(True|False)_")


def clean_numpy_reprs(text: str) -> str:
    """Replace numpy-2 scalar reprs by their values: "np.int64(0)" -> "0", "np.float64(1.5)" -> "1.5"."""
    return _NUMPY_BOOL.sub(r"\1", _NUMPY_SCALAR.sub(r"\2", text))


def structure_hash(structure, decimals: int = 4) -> str:
    """SHA-256 of the lattice and the sorted (species, fractional position) list, rounded; a cache key."""
    lattice = [[round(float(x), decimals) for x in row] for row in structure.lattice.matrix]
    sites = sorted(
        (str(site.species), *(round(float(f) % 1.0, decimals) % 1.0 for f in site.frac_coords)) for site in structure
    )
    payload = json.dumps({"lattice": lattice, "sites": sites}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _require_robocrys() -> None:
    try:
        import robocrys  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "robocrys descriptions need the optional `robocrys` package: install the `captions` extra "
            '(pip install "mmcrystal[captions]")'
        ) from err


def robocrys_describe(structure) -> str:
    """One robocrys description (condense, then describe); slow: about 6-16 s per structure."""
    from robocrys import StructureCondenser, StructureDescriber

    condensed = StructureCondenser().condense_structure(structure)
    return StructureDescriber().describe(condensed)


def robocrys_descriptions(
    structures: Sequence,
    cache_dir: str | Path | None = None,
    n_workers: int = 2,
    describe: Callable | None = None,
) -> list[str]:
    """Cleaned robocrys descriptions, computed in a process pool and cached on disk by ``structure_hash``.

    Args:
        structures: pymatgen Structures.
        cache_dir: Folder of ``<hash>.txt`` files (None: no cache). Clear it when robocrys changes version.
        n_workers: Processes (spawned); 1 runs in this process.
        describe: A picklable top-level function Structure -> text (default ``robocrys_describe``).
    """
    if describe is None:
        _require_robocrys()
        describe = robocrys_describe
    cache = Path(cache_dir) if cache_dir is not None else None
    keys = [structure_hash(s) for s in structures]
    results: dict[int, str] = {}
    for i, key in enumerate(keys):
        if cache is not None and (cache / f"{key}.txt").is_file():
            results[i] = (cache / f"{key}.txt").read_text(encoding="utf-8")
    todo = [i for i in range(len(structures)) if i not in results]
    if n_workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn")) as pool:
            texts = list(pool.map(describe, [structures[i] for i in todo]))
    else:
        texts = [describe(structures[i]) for i in todo]
    for i, text in zip(todo, texts, strict=True):
        results[i] = clean_numpy_reprs(text)
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            (cache / f"{keys[i]}.txt").write_text(results[i], encoding="utf-8")
    return [results[i] for i in range(len(structures))]
