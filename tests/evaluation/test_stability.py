"""Stability stage: CHGNet energies, convex hull (self-consistent and user-supplied), relaxation RMSD."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_crystals import bcc_sodium, cesium_chloride, chlorine_crystal, rocksalt, write_csv
from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Composition, Lattice, Structure

from mmcrystal.evaluation.hull import HullReference, build_self_consistent_hull, load_user_hull
from mmcrystal.evaluation.matching import load_or_build_index
from mmcrystal.evaluation.stability import ChgnetPotential, RelaxConfig, relaxation_rmsd, stability_records

SINGLE_POINT = RelaxConfig(relax=False)


def test_relaxation_rmsd_is_the_direct_displacement():
    a = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    b = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0.99, 0, 0], [0.5, 0.5, 0.55]])  # wraps through the boundary
    rmsd, dvol = relaxation_rmsd(a, b)
    assert rmsd == pytest.approx(np.sqrt((0.04**2 + 0.2**2) / 2), rel=1e-9)
    assert dvol == pytest.approx(0.0)


def test_chgnet_single_point_energy_and_counters(nacl):
    potential = ChgnetPotential(SINGLE_POINT)
    energies = potential.single_point([nacl, cesium_chloride()])
    assert energies.shape == (2,)
    assert -4.5 < energies[0] < -3.0  # rock-salt NaCl, about -3.67 eV/atom on the MP scale
    assert energies[1] > energies[0]  # CsCl-type NaCl is less stable than rock salt
    assert potential.n_single_point == 2 and potential.seconds > 0
    info = potential.info()
    assert info["name"] == "CHGNet" and info["model_version"] and info["package_version"]


def _nacl_hull(tmp_path, extra=None):
    """Hull from Na (bcc), Cl (molecular crystal), rock-salt NaCl and a competing CsCl-type NaCl."""
    refs = {"na": bcc_sodium(), "cl": chlorine_crystal(), "nacl-rs": rocksalt(), "nacl-cscl": cesium_chloride()}
    refs.update(extra or {})
    index = load_or_build_index([write_csv(tmp_path / "ref.csv", refs)], tmp_path / "cache")
    systems = [frozenset({"Na", "Cl"}), frozenset({"K", "Br"})]
    return build_self_consistent_hull(index, systems, SINGLE_POINT, tmp_path / "cache", elemental_refs=False)


def test_stable_binary_on_hull_and_polymorph_above(tmp_path):
    hull, calls = _nacl_hull(tmp_path)
    assert calls["n_single_point"] == 4
    potential = ChgnetPotential(SINGLE_POINT)
    rattled = rocksalt()  # every atom displaced by 0.35 Å in a seeded random direction
    directions = np.random.default_rng(0).normal(size=(len(rattled), 3))
    for i, d in enumerate(directions):
        rattled.translate_sites([i], 0.35 * d / np.linalg.norm(d), frac_coords=False)
    records = stability_records([rocksalt(), cesium_chloride(), rattled], potential)
    e_hull = [hull.e_above_hull(Composition("NaCl"), row["e_final"]) for row, _ in records]
    assert e_hull[0][1] == "ok" and abs(e_hull[0][0]) < 1e-3  # the rock-salt ground state lies on the hull
    assert e_hull[1][0] > 0.05  # CsCl-type NaCl: above the hull
    assert e_hull[2][0] > 0.05  # a rattled (high-energy) rock salt: above the hull
    # compositions with an element that has no elemental reference: "no hull", never a number
    value, status = hull.e_above_hull(Composition("KBr"), -3.0)
    assert value is None and status == "no_hull: missing Br-K"


def test_hull_energies_are_cached(tmp_path):
    first, calls = _nacl_hull(tmp_path)
    again, calls_again = _nacl_hull(tmp_path)
    assert calls["n_single_point"] == 4 and not calls_again  # second build: everything from the cache
    assert again.hash == first.hash
    changed, calls_changed = _nacl_hull(tmp_path, {"nacl-rattled": rocksalt(5.4)})
    assert calls_changed["n_single_point"] == 1 and changed.hash != first.hash


def test_user_supplied_hull(tmp_path):
    entries = [PDEntry("Na", -1.3), PDEntry("Cl", -1.8), PDEntry("NaCl", -2 * 3.67)]
    path = tmp_path / "hull.json"
    path.write_text(json.dumps([e.as_dict() for e in entries]))
    hull = load_user_hull(path)
    assert hull.kind == "user" and len(hull.entries) == 3 and hull.hash
    assert hull.e_above_hull(Composition("NaCl"), -3.67)[0] == pytest.approx(0.0, abs=1e-9)
    assert hull.e_above_hull(Composition("NaCl"), -3.57)[0] == pytest.approx(0.1, abs=1e-9)
    assert hull.e_above_hull(Composition("NaCl"), -3.77)[0] == pytest.approx(-0.1, abs=1e-9)  # below: negative


def test_hull_reference_groups_entries_by_chemical_system():
    hull = HullReference("user", [], "x", [PDEntry("Na", -1.0), PDEntry("Cl", -1.0), PDEntry("K", -1.0)])
    assert hull.elements_with_endpoints == {"Na", "Cl", "K"}
    assert hull.e_above_hull(Composition("KCl"), -1.0)[0] == pytest.approx(0.0)
    assert hull.n_compounds({"K", "Cl"}) == 0  # only elements: E_hull is the formation energy
    with_compound = HullReference("user", [], "y", [*hull.entries, PDEntry("KCl", -5.0)])
    assert with_compound.n_compounds({"K", "Cl"}) == 1 and with_compound.n_compounds({"Na", "Cl"}) == 0


@pytest.mark.slow
def test_relaxation_lowers_energy_and_reports_rmsd():
    strained = rocksalt(6.0)
    strained.perturb(0.1)
    potential = ChgnetPotential(RelaxConfig(relax=True, fmax=0.1, steps=200))
    [(row, relaxed)] = stability_records([strained], potential)
    assert row["stability_error"] == ""
    assert row["e_final"] < row["e_initial"]
    assert row["relax_steps"] >= 2 and potential.n_relax_steps == row["relax_steps"]
    assert row["relax_rmsd"] > 0 and row["relax_volume_change"] < 0  # the strained cell shrinks
    assert relaxed.lattice.a < 6.0
