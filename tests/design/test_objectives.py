"""Objectives: in-window probabilities, the acquisition, violations, chemistry rules and Pareto fronts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from mmcrystal.design.config import ChemistryConstraints, PropertyObjective
from mmcrystal.design.objectives import (
    acquisition,
    chemistry_violation,
    in_targets,
    objective_violation,
    pareto_front,
    window_probability,
)


def test_window_probability_matches_monte_carlo():
    objective = PropertyObjective(name="band_gap", low=1.0, high=2.0)
    mean, std = np.array([0.5, 1.5, 1.9, 4.0]), np.array([0.5, 0.2, 1.0, 0.3])
    draws = np.random.default_rng(0).normal(mean, std, size=(200_000, 4))
    expected = ((draws >= 1.0) & (draws <= 2.0)).mean(0)
    assert np.allclose(window_probability(mean, std, objective), expected, atol=3e-3)
    one_sided = PropertyObjective(name="band_gap", low=1.0)
    assert window_probability([1.0], [0.3], one_sided)[0] == pytest.approx(0.5)
    assert window_probability([np.nan], [0.3], one_sided)[0] == 0.0


def test_acquisition_multiplies_weighted_probabilities_and_inflation_flattens_it():
    gap = PropertyObjective(name="band_gap", low=1.0, high=2.0, weight=2.0)
    energy = PropertyObjective(name="formation_energy_per_atom", high=-1.0)
    means = {"band_gap": np.array([1.5, 3.0]), "formation_energy_per_atom": np.array([-2.0, -2.0])}
    stds = {"band_gap": np.array([0.3, 0.3]), "formation_energy_per_atom": np.array([0.5, 0.5])}
    acq = acquisition(means, stds, [gap, energy])
    p_gap = window_probability(means["band_gap"], stds["band_gap"], gap)
    p_energy = window_probability(means["formation_energy_per_atom"], stds["formation_energy_per_atom"], energy)
    assert np.allclose(acq, p_gap**2 * p_energy)
    inflated = acquisition(means, stds, [gap, energy], std_inflation=4.0)
    assert inflated[0] < acq[0] and inflated[1] > acq[1]  # less sure inside, less sure outside


def test_violations_and_targets():
    objectives = [PropertyObjective(name="a", low=1.0, high=2.0, scale=0.5), PropertyObjective(name="b", high=0.0)]
    assert objective_violation({"a": 1.5, "b": -1.0}, objectives) == 0.0
    assert objective_violation({"a": 3.0, "b": 0.5}, objectives) == pytest.approx(1.0 / 0.5 + 0.5)
    assert np.isnan(objective_violation({"a": 1.5}, objectives))
    assert in_targets({"a": 1.0, "b": 0.0}, objectives)
    assert not in_targets({"a": 2.01, "b": 0.0}, objectives)
    assert not in_targets({"a": float("nan"), "b": 0.0}, objectives)
    assert PropertyObjective(name="a", low=1.0, high=2.0).target == 1.5
    assert PropertyObjective(name="a", low=1.0, scale=0.5).target == 1.5
    with pytest.raises(ValueError, match="low"):
        PropertyObjective(name="a")
    with pytest.raises(ValueError, match=">"):
        PropertyObjective(name="a", low=2.0, high=1.0)


def test_chemistry_reasons():
    nacl = Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert chemistry_violation(nacl, ChemistryConstraints()) == ""
    assert chemistry_violation(nacl, ChemistryConstraints(elements=["Na", "O"])) == "outside_chemsys:Cl"
    assert chemistry_violation(nacl, ChemistryConstraints(excluded=["Cl", "Pb"])) == "excluded:Cl"
    assert chemistry_violation(nacl, ChemistryConstraints(required=["O"])) == "missing_required:O"
    assert chemistry_violation(nacl, ChemistryConstraints(min_elements=3)) == "too_few_elements"
    assert chemistry_violation(nacl, ChemistryConstraints(max_elements=1)) == "too_many_elements"
    assert chemistry_violation(nacl, ChemistryConstraints(max_atoms=1)) == "too_many_atoms"


def test_pareto_front_equals_brute_force():
    points = np.random.default_rng(3).random((60, 3)).round(1)  # rounding makes ties
    points[5] = np.nan
    front = pareto_front(points)
    for i, p in enumerate(points):
        if np.isnan(p).any():
            assert not front[i]
            continue
        dominated = any(
            np.all(q <= p) and np.any(q < p) for j, q in enumerate(points) if j != i and not np.isnan(q).any()
        )
        assert front[i] == (not dominated)
    assert front.sum() >= 1
    assert list(itertools.compress(range(3), pareto_front([[0, 1], [1, 0], [1, 1]]))) == [0, 1]
