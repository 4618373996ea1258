"""The oracle: CHGNet single points against a self-consistent hull of reference structures, plus a held-out
property model; calls and potential evaluations are counted."""

from __future__ import annotations

import math
import time

import numpy as np
from pymatgen.core import Lattice, Structure

from mmcrystal.design.oracle import ChgnetHullStability, DesignOracle
from mmcrystal.evaluation.matching import ReferenceIndex, bucket_key, compact, reduce_for_matching
from mmcrystal.evaluation.stability import RelaxConfig


class VolumeModel:
    property_names = ["volume_per_atom"]

    def predict(self, structures):
        mean = np.array([[s.volume / len(s)] for s in structures]).reshape(-1, 1)
        return mean, np.zeros_like(mean)

    def fine_tune(self, structures, targets, steps, lr, seed):
        return self


def _l10_cuau(scale: float = 1.0) -> Structure:
    lattice = Lattice.tetragonal(2.80 * scale, 3.70 * scale)
    return Structure(lattice, ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_chgnet_oracle_scores_stability_and_properties(tmp_path):
    references = [_l10_cuau(), Structure(Lattice.cubic(3.75), ["Au", "Cu", "Cu", "Cu"],
                                         [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])]  # fmt: skip
    buckets: dict = {}
    for i, s in enumerate(references):
        reduced = reduce_for_matching(s)
        buckets.setdefault(bucket_key(reduced), []).append((f"ref-{i}", compact(reduced)))
    index = ReferenceIndex(buckets=buckets, hash="oracle-test", n_structures=2, sources=["in-code"])
    stability = ChgnetHullStability(index, RelaxConfig(relax=False), tmp_path, elemental_prototypes=True)
    oracle = DesignOracle(VolumeModel(), stability)
    assert stability.judgeable(_l10_cuau()) == ""
    assert stability.judgeable(Structure(Lattice.cubic(5.0), ["Cu", "S"], [[0, 0, 0], [0.5, 0.5, 0.5]])).endswith(" S")
    start = time.perf_counter()
    squeezed = _l10_cuau(0.85)  # 15 % shorter bonds: far above the hull
    seven = Structure(Lattice.cubic(9.0), ["Cu", "Au", "Ag", "Pd", "Pt", "Ni", "Zn"],
                      [[i / 7, (2 * i % 7) / 7, (3 * i % 7) / 7] for i in range(7)])  # fmt: skip
    rows = oracle.evaluate([_l10_cuau(), squeezed, seven])
    elapsed = time.perf_counter() - start
    assert [r["oracle_status"] for r in rows] == ["ok", "ok", "no_hull: 7 elements"]
    assert math.isnan(rows[2]["e_hull"])  # named and counted, never a multi-hour 6-D hull
    assert oracle.judgeable(seven) == "7 elements"  # the loop does not even send it
    assert abs(rows[0]["e_hull"]) < 0.05  # the reference itself sits on (or within round-off of) its hull
    assert rows[1]["e_hull"] > rows[0]["e_hull"] + 0.2
    assert math.isclose(rows[1]["volume_per_atom"], squeezed.volume / 2)
    counters = oracle.counters()
    assert counters["oracle_calls"] == 3 and counters["potential_evaluations"] >= 2 + 2  # candidates + hull refs
    assert elapsed < 60


def test_property_only_oracle_counts_calls():
    oracle = DesignOracle(VolumeModel())
    rows = oracle.evaluate([_l10_cuau(), _l10_cuau(1.1)])
    assert [r["e_hull"] for r in rows] == [0.0, 0.0] and rows[0]["hull_status"] == "not_judged"
    assert oracle.counters() == {"oracle_calls": 2, "potential_evaluations": 0.0}
