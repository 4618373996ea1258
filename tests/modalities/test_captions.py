"""Generated captions state the right facts; properties map to the documented words; seeding; provided captions."""

from __future__ import annotations

import importlib.util
import re
import warnings

import numpy as np
import pytest

from mmcrystal.data.readers import parse_captions
from mmcrystal.modalities.captions import (
    CAPTION_TEMPLATES,
    captions_from_facts,
    classify_band_gap,
    classify_stability,
    clean_numpy_reprs,
    describe_structure,
    generate_captions,
    robocrys_descriptions,
    structure_hash,
)

SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
CATEGORIES = ("metal", "semiconductor", "insulator", "stable", "metastable", "unstable")


def _words(text: str, vocabulary) -> set[str]:
    return {w for w in vocabulary if re.search(rf"\b{w}\b", text, flags=re.IGNORECASE)}


def _has_formula(text: str, formula: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9(]){re.escape(formula)}(?![a-z0-9])", text) is not None


def _check_captions(structure, captions, crystal_system: str, lattice_type: str):
    formula = structure.composition.reduced_formula
    for caption in captions:
        assert _has_formula(caption, formula), (formula, caption)
        assert crystal_system in _words(caption, SYSTEMS), (crystal_system, caption)
        assert _words(caption, SYSTEMS) <= {crystal_system, lattice_type}, caption  # no wrong system named


@pytest.fixture(scope="module")
def rocksalt():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_rocksalt_facts(rocksalt):
    facts = describe_structure(rocksalt)
    assert facts.reduced_formula == "NaCl" and facts.element_names == ("sodium", "chlorine")
    assert (facts.crystal_system, facts.space_group_symbol, facts.space_group_number) == ("cubic", "Fm-3m", 225)
    assert facts.bravais_lattice == "face-centered cubic" and facts.num_sites == 8
    assert facts.density == pytest.approx(2.163, abs=0.01)  # g/cm³


def test_symprec_is_configurable(rocksalt):
    distorted = rocksalt.copy()
    distorted.apply_strain([0.0, 0.0, 0.005])  # c/a = 1.005: cubic at 0.1 Å, tetragonal at 1e-4 Å
    assert describe_structure(distorted).crystal_system == "cubic"
    assert describe_structure(distorted, symprec=1e-4).crystal_system == "tetragonal"
    assert "tetragonal" in generate_captions(distorted, n=1, symprec=1e-4)[0].lower()


def test_captions_of_real_mp20_structures(mp20_structures):
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    for i, structure in enumerate(mp20_structures):
        analyzer = SpacegroupAnalyzer(structure, symprec=0.1)
        captions = generate_captions(structure, n=4, seed=i)
        _check_captions(structure, captions, analyzer.get_crystal_system(), analyzer.get_lattice_type())


def _mp40_rows(shared_data, nrows):
    import pandas as pd
    from pymatgen.core import Structure

    frame = pd.read_csv(shared_data / "mp_40_text" / "test.csv", nrows=nrows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF rounding notices
        structures = [Structure.from_str(cif, fmt="cif") for cif in frame["cif"]]
    return frame, structures


def _check_mp40(frame, structures):
    for i, (row, structure) in enumerate(zip(frame.itertuples(), structures, strict=True)):
        facts = describe_structure(structure)
        assert facts.crystal_system == row.crystal_system.lower(), row.material_id  # MP's label is ground truth
        assert facts.space_group_number == row.space_group_number, row.material_id
        props = {"band_gap": row.band_gap, "energy_above_hull": row.energy_above_hull}
        captions = captions_from_facts(facts, props, n=3, seed=i)
        _check_captions(structure, captions, facts.crystal_system, facts.lattice_type)
        for caption in captions:
            expected = {classify_band_gap(row.band_gap), classify_stability(row.energy_above_hull)}
            assert _words(caption, CATEGORIES) == expected, caption


def test_captions_match_mp40_crystal_systems(shared_data):
    _check_mp40(*_mp40_rows(shared_data, 150))


@pytest.mark.slow
def test_captions_match_mp40_crystal_systems_all_rows(shared_data):
    _check_mp40(*_mp40_rows(shared_data, None))


@pytest.mark.parametrize(
    ("gap", "word"),
    [(0.0, "metal"), (0.099, "metal"), (0.1, "semiconductor"), (2.99, "semiconductor"), (3.0, "insulator")],
)
def test_band_gap_thresholds(rocksalt, gap, word):
    for caption in generate_captions(rocksalt, {"band_gap": gap}, n=len(CAPTION_TEMPLATES), seed=0):
        assert _words(caption, CATEGORIES) == {word}, caption
        assert f"{gap:.2f} eV" in caption or word == "metal"


@pytest.mark.parametrize(
    ("e_hull", "word"),
    [(0.0, "stable"), (-0.01, "stable"), (0.05, "metastable"), (0.1, "metastable"), (0.1001, "unstable")],
)
def test_hull_thresholds_and_formation_energy(rocksalt, e_hull, word):
    props = {"energy_above_hull": e_hull, "formation_energy_per_atom": -2.0412, "band_gap": float("nan")}
    for caption in generate_captions(rocksalt, props, n=len(CAPTION_TEMPLATES), seed=3):
        assert _words(caption, CATEGORIES) == {word}, caption  # NaN band gap: no gap phrase
        assert "-2.041 eV/atom" in caption


def test_seeded_choice_of_templates(rocksalt):
    facts = describe_structure(rocksalt)
    assert len(CAPTION_TEMPLATES) >= 10 and len(set(CAPTION_TEMPLATES)) == len(CAPTION_TEMPLATES)
    assert captions_from_facts(facts, n=3, seed=1) == captions_from_facts(facts, n=3, seed=1)
    assert captions_from_facts(facts, n=3, seed=1) != captions_from_facts(facts, n=3, seed=2)
    one_each = captions_from_facts(facts, n=len(CAPTION_TEMPLATES), seed=0)
    assert len(set(one_each)) == len(CAPTION_TEMPLATES)  # distinct templates while n <= number of templates
    firsts = {captions_from_facts(facts, n=1, seed=s)[0] for s in range(40)}
    assert len(firsts) >= 8  # seeds spread over the templates
    assert len(captions_from_facts(facts, n=30, seed=0)) == 30


def test_parse_captions():
    assert parse_captions("Cubic NaCl crystal") == ["Cubic NaCl crystal"]
    assert parse_captions("['Cubic NaCl', \"Rocksalt NaCl\"]") == ["Cubic NaCl", "Rocksalt NaCl"]
    assert parse_captions("[x for x in ()]") == ["[x for x in ()]"]  # not a literal: kept as text
    assert parse_captions("__import__('os').system('true')") == ["__import__('os').system('true')"]
    assert parse_captions(float("nan")) == [] and parse_captions("  ") == []


def test_mp40_prompts_are_single_captions(shared_data):
    import pandas as pd

    prompts = pd.read_csv(shared_data / "mp_40_text" / "test.csv", usecols=["prompt"])["prompt"]
    assert all(parse_captions(p) == [p.strip()] for p in prompts)


def test_clean_numpy_reprs():
    text = "Na is bonded to np.int64(6) Cl atoms at np.float64(2.83) Å; flag np.True_, name np.str_('Cl')."
    assert clean_numpy_reprs(text) == "Na is bonded to 6 Cl atoms at 2.83 Å; flag True, name Cl."
    assert clean_numpy_reprs("no reprs (here)") == "no reprs (here)"


def _fake_describe(structure) -> str:
    _fake_describe.calls += 1
    return f"A structure with np.int64({len(structure)}) sites."


_fake_describe.calls = 0


def test_robocrys_step_caches_and_cleans(tmp_path, rocksalt, mp20_structures):
    structures = [rocksalt, mp20_structures[0], rocksalt]
    first = robocrys_descriptions(structures, cache_dir=tmp_path, n_workers=1, describe=_fake_describe)
    assert first[0] == "A structure with 8 sites." and first[0] == first[2]
    calls = _fake_describe.calls
    again = robocrys_descriptions(structures, cache_dir=tmp_path, n_workers=1, describe=_fake_describe)
    assert again == first and _fake_describe.calls == calls  # all from the cache
    assert len(list(tmp_path.glob("*.txt"))) == 2
    if importlib.util.find_spec("robocrys") is None:
        with pytest.raises(ImportError, match=r"captions"):
            robocrys_descriptions([rocksalt])


def test_structure_hash_ignores_site_order(rocksalt):
    shuffled = rocksalt.copy()
    order = np.random.default_rng(0).permutation(len(shuffled))
    shuffled = shuffled.__class__.from_sites([shuffled[i] for i in order])
    assert structure_hash(shuffled) == structure_hash(rocksalt)
    assert structure_hash(rocksalt * (2, 1, 1)) != structure_hash(rocksalt)
