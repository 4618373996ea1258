"""Distribution stage: coverage, Wasserstein distances, diversity-collapse indicators."""

from __future__ import annotations

import numpy as np
import pytest

from mmcrystal.evaluation.distribution import coverage, cutoffs_for, diversity_indicators, wasserstein_metrics
from mmcrystal.evaluation.fingerprints import composition_fingerprint, structure_fingerprint


@pytest.fixture(scope="module")
def mp20_fps(mp20_structures):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structs = mp20_structures[:24]
        return (
            np.array([structure_fingerprint(s) for s in structs]),
            np.array([composition_fingerprint(s.composition) for s in structs]),
        )


def test_coverage_of_a_set_against_itself_is_one(mp20_fps):
    s, c = mp20_fps
    cov = coverage(s, c, s, c, *cutoffs_for("mp_20"))
    assert cov["cov_recall"] == 1.0 and cov["cov_precision"] == 1.0


def test_coverage_drops_for_a_disjoint_set_and_counts_failed_samples(mp20_fps):
    s, c = mp20_fps
    half = len(s) // 2
    cov = coverage(s[:half], c[:half], s[half:], c[half:], struct_cutoff=0.05, comp_cutoff=0.5)
    assert cov["cov_recall"] < 0.5 and cov["cov_precision"] < 0.5
    # COV-P divides by all generated samples, including those without a fingerprint
    assert coverage(s, c, s, c, n_generated=2 * len(s))["cov_precision"] == 0.5


def test_cutoffs_per_dataset():
    assert cutoffs_for("MP-20") == (0.4, 10.0)
    assert cutoffs_for("carbon_24") == cutoffs_for("perov5") == (0.2, 4.0)


def test_wasserstein_distances():
    same = wasserstein_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [2, 3], [2, 3])
    assert same == {"wdist_density": 0.0, "wdist_num_elems": 0.0}
    shifted = wasserstein_metrics([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], [3, 3], [2, 2])
    assert shifted["wdist_density"] == pytest.approx(1.0) and shifted["wdist_num_elems"] == pytest.approx(1.0)


def test_diversity_indicators_flag_collapse(mp20_fps):
    s, _ = mp20_fps
    diverse = diversity_indicators(s)
    collapsed = diversity_indicators(np.repeat(s[:2], 12, axis=0))
    assert collapsed["near_identical_rate"] == 1.0 and diverse["near_identical_rate"] < 0.5
    assert collapsed["nn_mean"] < 1e-9 < diverse["nn_mean"]
