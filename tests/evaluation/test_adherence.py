"""Condition adherence: composition, chemical system, symmetry, property model, XRD agreement."""

from __future__ import annotations

import numpy as np
import pytest
from eval_crystals import cesium_chloride, rocksalt

from mmcrystal.evaluation.adherence import (
    ConditionTargets,
    adherence_records,
    pymatgen_pattern,
    symmetry_info,
    xrd_agreement,
)


class VolumeModel:
    """Evaluation-only toy property model: volume per atom (Å^3) with a fixed uncertainty."""

    def predict(self, structures):
        mean = np.array([s.volume / len(s) for s in structures])
        return mean, np.full(len(structures), 0.1)


def test_symmetry_info(nacl):
    assert symmetry_info(nacl) == (225, "cubic")
    assert symmetry_info(cesium_chloride()) == (221, "cubic")


def test_condition_matches(nacl):
    targets = [
        ConditionTargets(composition="Na2Cl2", chemical_system="Cl-Na", crystal_system="cubic", space_group=225),
        ConditionTargets(composition="KCl", chemical_system="K-Cl", crystal_system="hexagonal", space_group=221),
        None,
    ]
    rows = adherence_records([nacl, nacl, nacl], targets)
    assert rows[0] == {
        "composition_match": True,
        "chemsys_match": True,
        "space_group_match": True,
        "crystal_system_match": True,
    }
    assert not any(rows[1].values()) and rows[2] == {}


def test_property_within_tolerance(nacl):
    per_atom = nacl.volume / len(nacl)
    targets = [ConditionTargets(property=per_atom + 0.2), ConditionTargets(property=per_atom + 2.0)]
    rows = adherence_records([nacl, nacl], targets, property_model=VolumeModel(), property_tolerance=0.5)
    assert rows[0]["property_within_tol"] and not rows[1]["property_within_tol"]
    assert rows[1]["property_error"] == pytest.approx(2.0)


def test_xrd_agreement_on_the_same_grid(nacl):
    patterns = pymatgen_pattern([nacl, rocksalt(6.3, "K", "Cl"), cesium_chloride()], n_bins=2048)
    cosine, rwp = xrd_agreement(patterns[0], patterns[0])
    assert cosine == pytest.approx(1.0) and rwp == pytest.approx(0.0, abs=1e-12)
    other_cos, other_rwp = xrd_agreement(patterns[1], patterns[0])
    assert other_cos < 0.5 and other_rwp > 0.5
    assert xrd_agreement(2.0 * patterns[0], patterns[0])[1] == pytest.approx(0.0, abs=1e-12)  # scale-free Rwp
    with pytest.raises(ValueError, match="different grids"):
        xrd_agreement(patterns[0][:100], patterns[0])


def test_xrd_columns_use_the_pattern_function(nacl):
    fn = lambda structures: pymatgen_pattern(structures, n_bins=1024)  # noqa: E731
    target = fn([nacl])[0]
    rows = adherence_records([nacl, cesium_chloride()], [ConditionTargets(xrd=target)] * 2, pattern_fn=fn)
    assert rows[0]["xrd_cosine"] == pytest.approx(1.0) and rows[1]["xrd_cosine"] < 0.9
