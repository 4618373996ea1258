"""The staged screen: every rejection named, SMACT optional, uniqueness across rounds, novelty against training."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Lattice, Structure

from mmcrystal.design.config import ChemistryConstraints, ScreenConfig
from mmcrystal.design.screen import CandidateScreen
from mmcrystal.evaluation.matching import ReferenceIndex, bucket_key, compact, reduce_for_matching


def _rocksalt(a: float = 5.64, cation: str = "Na", anion: str = "Cl") -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _na_cl2() -> Structure:
    """Na(+1) with two Cl(-1): no charge-neutral assignment passing the electronegativity test."""
    return Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])


def _index(structures) -> ReferenceIndex:
    buckets: dict = {}
    for i, s in enumerate(structures):
        reduced = reduce_for_matching(s)
        buckets.setdefault(bucket_key(reduced), []).append((f"train-{i}", compact(reduced)))
    return ReferenceIndex(buckets=buckets, hash="screen-test", n_structures=len(structures))


def test_each_stage_rejects_with_its_reason():
    screen = CandidateScreen(ScreenConfig(), ChemistryConstraints(excluded=["Pb"]), _index([_rocksalt()]))
    overlap = Structure(Lattice.cubic(4.0), ["K", "Br"], [[0, 0, 0], [0.05, 0, 0]])
    candidates = {
        "pb": _rocksalt(cation="Pb", anion="S"),
        "overlap": overlap,
        "not_balanced": _na_cl2(),
        "known": _rocksalt(5.70),  # NaCl, slightly strained: matches the training structure
        "new": _rocksalt(6.6, "K", "Br"),
        "again": _rocksalt(6.7, "K", "Br").make_supercell([1, 1, 2]),  # the same KBr in another cell
    }
    rows = dict(zip(candidates, screen.screen(list(candidates), list(candidates.values())), strict=True))
    assert rows["pb"]["screen_reject"] == "chemistry:excluded:Pb"
    assert rows["overlap"]["screen_reject"] == "structure:overlap"
    assert rows["not_balanced"]["screen_reject"] == "smact" and rows["not_balanced"]["struct_valid"]
    assert rows["known"]["screen_reject"] == "known" and rows["known"]["training_match"] == "train-0"
    assert rows["new"]["passed"] and rows["new"]["unique"] and rows["new"]["novel"]
    assert rows["again"]["screen_reject"] == "duplicate" and rows["again"]["duplicate_of"] == "new"
    assert [r["passed"] for r in rows.values()] == [False, False, False, False, True, False]


def test_smact_can_be_reported_without_rejecting():
    screen = CandidateScreen(ScreenConfig(require_smact=False), ChemistryConstraints())
    row = screen.screen(["x"], [_na_cl2()])[0]
    assert row["passed"] and row["smact_valid"] is False and row["novel"]  # no index: novelty not judged


def test_uniqueness_spans_rounds_and_is_rebuilt_by_remember():
    first = CandidateScreen(ScreenConfig(), ChemistryConstraints())
    first.screen(["r0-a"], [_rocksalt(6.6, "K", "Br")])
    later = _rocksalt(6.6, "K", "Br")
    later.perturb(0.01)
    assert first.screen(["r1-a"], [later])[0]["duplicate_of"] == "r0-a"
    resumed = CandidateScreen(ScreenConfig(), ChemistryConstraints())
    resumed.remember(["r0-a"], [_rocksalt(6.6, "K", "Br")])
    assert resumed.screen(["r1-a"], [later])[0]["duplicate_of"] == "r0-a"
    fresh = CandidateScreen(ScreenConfig(), ChemistryConstraints())
    assert fresh.screen(["r1-a"], [later])[0]["unique"]
    assert np.isclose(later.volume, _rocksalt(6.6).volume, rtol=0.05)
