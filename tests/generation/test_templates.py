"""`TemplateLibrary`: choosing a symmetry template for a formula and a crystal system or space group, by pattern
(rank-matched elements) or by re-decorating orbits; seeded; from prepared shards; parsing of crystal systems."""

from __future__ import annotations

import pytest
from pymatgen.core import Composition, Lattice, Structure

from mmcrystal.diffusion.symmetry import template_from_structure
from mmcrystal.generation.templates import TemplateLibrary, crystal_system_in_prompt, spacegroups_of


def known_structures() -> list[tuple[str, Structure]]:
    perovskite = Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.9), ["Sr", "Ti", "O"],
                                           [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])  # fmt: skip
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                       [[0, 0, 0], [0.305, 0.305, 0.0]])  # fmt: skip
    return [("perovskite", perovskite), ("rocksalt", rocksalt), ("rutile", rutile)]


@pytest.fixture(scope="module")
def library() -> TemplateLibrary:
    return TemplateLibrary.from_structures(known_structures())


def test_spacegroups_and_crystal_systems_in_prompts():
    assert spacegroups_of("cubic") == frozenset(range(195, 231))
    assert spacegroups_of("Rhombohedral") == spacegroups_of("trigonal") == frozenset(range(143, 168))
    assert spacegroups_of("Fm-3m") == spacegroups_of(225) == frozenset({225})
    with pytest.raises(ValueError, match="space group"):
        spacegroups_of("pentagonal")
    assert crystal_system_in_prompt("Tetragonal crystal structure of CaO10 compound") == "tetragonal"
    assert crystal_system_in_prompt("NaCaH6Ir: a unique cubic arrangement.") == "cubic"
    assert crystal_system_in_prompt("A rhombohedral-ish phase") == "trigonal"
    assert crystal_system_in_prompt("Layered LiCoO2 cathode") is None


def test_same_pattern_maps_elements_by_count_and_electronegativity(library):
    template = library.choose(spacegroups_of("cubic"), Composition("BaZrS3"), seed=0)
    assert template is not None and template.source == "perovskite" and template.spacegroup == 221
    by_orbit = {tuple(sorted(template.species[template.orbit == o].tolist())) for o in range(len(template.orbit_sizes))}
    assert by_orbit == {(56,), (40,), (16, 16, 16)}  # S takes the 3-fold O site
    # Ba (X 0.89) takes the A site of Sr (0.95), Zr (1.33) the B site of Ti (1.54)
    original = template_from_structure(known_structures()[0][1]).species.tolist()  # same atom order
    assert {(o, n) for o, n in zip(original, template.species.tolist(), strict=True)} == {(38, 56), (22, 40), (8, 16)}
    rock = library.choose(spacegroups_of("Fm-3m"), Composition("KBr"), seed=0)
    assert rock.num_atoms == 2 and sorted(rock.species.tolist()) == [19, 35]


def test_orbits_are_redecorated_when_no_template_has_the_pattern(library):
    template = library.choose(spacegroups_of("cubic"), Composition("Li4O"), seed=3)  # pattern (1, 4): none stored
    assert template is not None and template.source == "perovskite"
    assert sorted(template.species.tolist()) == [3, 3, 3, 3, 8]
    for o in range(len(template.orbit_sizes)):  # each orbit holds one element
        assert len(set(template.species[template.orbit == o].tolist())) == 1


def test_no_fit_gives_none_and_choice_is_seeded(library):
    assert library.choose(spacegroups_of("cubic"), Composition("Fe2O3"), seed=0).source == "perovskite"  # 1+1, 3
    assert library.choose(spacegroups_of("cubic"), Composition("LiB2C2"), seed=0) is None  # orbits 1, 1, 3 can't
    assert library.choose(spacegroups_of("hexagonal"), Composition("NaCl"), seed=0) is None
    assert library.choose(spacegroups_of("cubic"), Composition("Na8Cl8"), seed=0, max_atoms=1) is None
    picks = {library.choose(spacegroups_of("cubic"), Composition("NaCl"), seed=s).source for s in range(20)}
    assert picks == {"rocksalt"}  # the only cubic crystal with a 1:1 pattern (tier 1 first)
    first = library.choose(spacegroups_of("tetragonal"), Composition("SnO2"), seed=5)
    again = library.choose(spacegroups_of("tetragonal"), Composition("SnO2"), seed=5)
    assert first.source == again.source == "rutile" and (first.species == again.species).all()


def test_library_from_prepared_shards(mp40_tiny):
    library = TemplateLibrary.from_shards(mp40_tiny, "train")
    assert len(library) > 20
    systems = spacegroups_of("cubic") | spacegroups_of("tetragonal") | spacegroups_of("monoclinic")
    formulas = [entry.structure.composition for entry in library.entries if entry.spacegroup in systems][:5]
    for formula in formulas:  # a stored crystal's own formula always finds a template (itself at least)
        template = library.choose(systems, formula, seed=0)
        assert template is not None
        counts = {z: template.species.tolist().count(z) for z in set(template.species.tolist())}
        assert Composition({k: v for k, v in counts.items()}).reduced_formula == formula.reduced_formula
    first = library.entries[0].id
    fewer = TemplateLibrary.from_shards(mp40_tiny, "train", exclude=[first])
    assert len(fewer) == len(library) - 1 and first not in {e.id for e in fewer.entries}
    assert "1 excluded ids left out" in fewer.source
    with pytest.raises(ValueError, match="no 'nope' split"):
        TemplateLibrary.from_shards(mp40_tiny, "nope")


def test_generator_holds_samples_to_the_requested_symmetry(text_decoder, library):
    import warnings

    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from mmcrystal.generate import CrystalGenerator

    generator = CrystalGenerator.from_pretrained(text_decoder)
    with pytest.raises(ValueError, match="known crystals"):
        generator.sample(composition="NaCl", symmetry="cubic", n=2, steps=3)
    generator.templates = library
    structures = generator.sample(composition="NaCl", symmetry="cubic", n=4, steps=4, batch_size=3, seed=1)
    assert [len(s) for s in structures] == [2] * 4  # the template's cell, whatever the composition's count says
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        numbers = [SpacegroupAnalyzer(s, symprec=0.01).get_space_group_number() for s in structures]
    assert numbers == [225] * 4  # an untrained denoiser, yet every sample is rock salt's group
    assert all(s.composition.reduced_formula == "NaCl" for s in structures)
    assert generator.template_counts == {"templated": 4, "no_template": 0}
    free = generator.sample(composition="LiB2C2", symmetry="cubic", n=2, steps=3)  # no template fits: free
    assert len(free) == 2 and generator.template_counts["no_template"] == 2
    # a prompt naming no crystal system leaves the samples free; one naming a system needs the types first
    none = generator.resolve(prompt="a layered oxide", composition="NaCl", symmetry="prompt")
    assert none.symmetry is None and "symmetry" not in none.record()
    named = generator.resolve(prompt="a cubic salt", composition="NaCl", symmetry="prompt")
    assert named.symmetry == spacegroups_of("cubic") and named.record()["symmetry"] == "cubic"
    with pytest.raises(ValueError, match="atom types first"):
        generator.resolve(prompt="a cubic salt", symmetry="prompt")
    batch = generator.sample_requests([{"composition": "SrTiO3", "symmetry": "cubic"}] * 2, steps=3)
    assert [len(s) for s in batch] == [5, 5]
