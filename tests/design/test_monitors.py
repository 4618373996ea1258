"""Monitors: each fires on its failure mode and stays quiet otherwise; steering changes the loop as documented."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from mmcrystal.design.config import MonitorConfig
from mmcrystal.design.monitors import (
    DensityReference,
    distribution_shift,
    diversity_collapse,
    feature_spread,
    steer,
    surrogate_exploitation,
    synthesizability_gap,
)

CFG = MonitorConfig()


def _scored(bias: float, std: float, n: int = 8, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    truth = rng.normal(2.0, 0.5, n)
    noise = rng.normal(0.0, std, n)  # a calibrated surrogate errs by about its std
    return [{"band_gap": t, "sur_band_gap_mean": t + bias + e, "sur_band_gap_std": std, "oracle_status": "ok"}
            for t, e in zip(truth, noise, strict=True)]  # fmt: skip


def test_exploitation_fires_on_a_biased_surrogate_only():
    quiet = surrogate_exploitation(_scored(0.0, 0.2), _scored(0.0, 0.2, 40), ["band_gap"], CFG)
    biased = surrogate_exploitation(_scored(1.5, 0.2), _scored(1.5, 0.2, 40), ["band_gap"], CFG)
    assert not quiet.fired and quiet.values["z"] < 1.5
    assert biased.fired and biased.action == "steer" and biased.values["bias_band_gap"] > 1.0
    assert "surrogate - oracle" in biased.reason


def test_exploitation_does_not_fire_on_a_deterministic_surrogate_without_evidence(caplog):
    """A single fine-tuned model reports std 0: z is undefined (counted and logged), not infinite."""
    zero = [{**r, "sur_band_gap_std": 0.0} for r in _scored(0.1, 0.2)]
    reading = surrogate_exploitation(zero, zero * 5, ["band_gap"], CFG)
    assert not reading.fired and math.isnan(reading.values["z"]) and reading.values["zero_std"] == len(zero)
    assert "zero surrogate std" in caplog.text
    biased = [{**r, "sur_band_gap_std": 0.0} for r in _scored(1.5, 0.2)]
    assert not surrogate_exploitation(biased, biased, ["band_gap"], CFG).fired  # no z; the gap is still reported
    assert surrogate_exploitation(biased, biased, ["band_gap"], CFG).values["gap_band_gap"] > 1.0


def test_exploitation_fires_when_selection_chases_disagreement():
    screened = _scored(0.0, 0.1, 40)
    selected = [{**r, "sur_band_gap_std": 1.0, "sur_band_gap_mean": r["band_gap"]} for r in screened[:4]]
    reading = surrogate_exploitation(selected, screened, ["band_gap"], CFG)
    assert reading.fired and reading.values["disagreement_ratio"] > CFG.disagreement_max_ratio


def test_diversity_fires_on_duplicates_or_collapsed_spread():
    rows = [{"unique": i < 3} for i in range(10)]
    assert diversity_collapse(rows, 1.0, 1.0, CFG).fired  # 30 % unique
    assert diversity_collapse([{"unique": True}] * 10, 0.2, 1.0, CFG).fired  # spread fell to 20 %
    assert not diversity_collapse([{"unique": True}] * 10, 0.9, 1.0, CFG).fired
    tight = np.random.default_rng(0).normal(0, 0.01, (20, 3))
    wide = np.random.default_rng(0).normal(0, 1.0, (20, 3))
    assert feature_spread(tight) < 0.05 * feature_spread(wide)
    assert math.isnan(feature_spread(wide[:1]))


def test_shift_measures_distance_to_the_training_density():
    rng = np.random.default_rng(0)
    density = DensityReference(rng.normal(0, 1, (500, 4)), k=5, quantile=0.95)
    inside = density.knn_distance(rng.normal(0, 1, (50, 4)))
    outside = density.knn_distance(rng.normal(6, 1, (50, 4)))
    assert np.mean(inside > density.cut) < 0.2 and np.all(outside > density.cut)
    assert not distribution_shift(inside, density.cut, CFG).fired
    reading = distribution_shift(outside, density.cut, CFG)
    assert reading.fired and reading.values["ood_fraction"] == 1.0


def test_synthesizability_gap():
    stable_not_balanced = [{"e_hull": 0.0, "smact_valid": False}] * 3 + [{"e_hull": 0.05, "smact_valid": True}]
    reading = synthesizability_gap(stable_not_balanced, 0.1, CFG)
    assert reading.fired and reading.values["stable_not_smact"] == 0.75 and reading.action == "warn"
    fine = [{"e_hull": 0.0, "smact_valid": True}] * 4 + [{"e_hull": float("nan"), "smact_valid": False}]
    assert not synthesizability_gap(fine, 0.1, CFG).fired


def test_steering_and_stopping():
    state = SimpleNamespace(std_inflation=1.0, guidance=2.0, ood_filter=False, require_smact=False, stopped="")
    proposer = SimpleNamespace(factors=[])
    proposer.scale_step = proposer.factors.append
    readings = [
        surrogate_exploitation(_scored(2.0, 0.1), _scored(2.0, 0.1, 20), ["band_gap"], CFG),
        diversity_collapse([{"unique": False}] * 4, 1.0, 1.0, CFG),
        distribution_shift(np.array([9.0, 9.0]), 1.0, CFG),
        synthesizability_gap(
            [{"e_hull": 0.0, "smact_valid": False}], 0.1, MonitorConfig(actions={"synthesizability": "steer"})
        ),  # fmt: skip
    ]
    steer(readings, state, proposer)
    assert state.std_inflation == 2.0 and state.guidance == 1.4 and state.ood_filter and state.require_smact
    assert proposer.factors == [0.5, 1.5, 0.5] and state.stopped == ""
    stop = MonitorConfig(actions={"exploitation": "stop"})
    steer([surrogate_exploitation(_scored(2.0, 0.1), _scored(2.0, 0.1), ["band_gap"], stop)], state, proposer)
    assert state.stopped == "monitor:exploitation"
