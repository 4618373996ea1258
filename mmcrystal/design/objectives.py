"""Objectives of a design run as plain functions: property windows, the acquisition, chemistry rules, Pareto fronts.

Acquisition. With a surrogate that reports a mean m and a standard deviation s per property, and treating its
prediction as Normal(m, s^2), the probability that a candidate lies in a window [low, high] is
Phi((high - m) / s) - Phi((low - m) / s) (probability of improvement / feasibility, Jones, Schonlau & Welch, J.
Global Optim. 1998; Gardner et al., ICML 2014 for constraint probabilities). Several windows multiply (the
properties are treated as independent), each raised to its objective's weight. The ensemble's s can be inflated by
a factor when a monitor finds the surrogate over-confident.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from mmcrystal.design.config import ChemistryConstraints, PropertyObjective

__all__ = [
    "acquisition",
    "chemistry_violation",
    "in_targets",
    "objective_violation",
    "pareto_front",
    "window_probability",
]


def window_probability(mean, std, objective: PropertyObjective) -> np.ndarray:
    """P(low <= Y <= high) for Y ~ Normal(mean, std^2), elementwise; std 0 gives 0 or 1."""
    mean = np.asarray(mean, dtype=float)
    std = np.maximum(np.asarray(std, dtype=float), 1e-9)
    erf = np.vectorize(math.erf, otypes=[float])

    def cdf(x: float | None, sign: float) -> np.ndarray:
        if x is None:
            return np.full_like(mean, 1.0 if sign > 0 else 0.0)
        return 0.5 * (1 + erf((x - mean) / (std * math.sqrt(2))))

    prob = cdf(objective.high, 1.0) - cdf(objective.low, -1.0)
    return np.where(np.isfinite(mean), np.clip(prob, 0.0, 1.0), 0.0)


def acquisition(
    means: Mapping[str, np.ndarray],
    stds: Mapping[str, np.ndarray],
    objectives: Sequence[PropertyObjective],
    std_inflation: float = 1.0,
) -> np.ndarray:
    """Product over objectives of the in-window probability^weight, shape (N,) (module docstring)."""
    out = None
    for objective in objectives:
        prob = window_probability(means[objective.name], std_inflation * np.asarray(stds[objective.name]), objective)
        out = prob**objective.weight if out is None else out * prob**objective.weight
    return out


def _distance_outside(value: float, objective: PropertyObjective) -> float:
    if objective.low is not None and value < objective.low:
        return objective.low - value
    if objective.high is not None and value > objective.high:
        return value - objective.high
    return 0.0


def objective_violation(values: Mapping[str, float], objectives: Sequence[PropertyObjective]) -> float:
    """Weighted sum of distances outside the windows, in units of each objective's scale (0: every window met);
    NaN when a value is missing or not finite."""
    total = 0.0
    for objective in objectives:
        value = values.get(objective.name)
        if value is None or not math.isfinite(float(value)):
            return math.nan
        total += objective.weight * _distance_outside(float(value), objective) / objective.scale
    return total


def in_targets(values: Mapping[str, float], objectives: Sequence[PropertyObjective]) -> bool:
    """Every value present, finite and inside its window."""
    for objective in objectives:
        value = values.get(objective.name)
        if value is None or not math.isfinite(float(value)) or _distance_outside(float(value), objective) > 0:
            return False
    return True


def chemistry_violation(structure, constraints: ChemistryConstraints) -> str:
    """Why a structure breaks the chemistry constraints ("" when it does not): outside_chemsys:<elements>,
    excluded:<elements>, missing_required:<elements>, too_few_elements, too_many_elements, too_many_atoms."""
    elements = {el.symbol for el in structure.composition.elements}
    if constraints.elements is not None:
        outside = sorted(elements - set(constraints.elements))
        if outside:
            return "outside_chemsys:" + "-".join(outside)
    excluded = sorted(elements & set(constraints.excluded))
    if excluded:
        return "excluded:" + "-".join(excluded)
    missing = sorted(set(constraints.required) - elements)
    if missing:
        return "missing_required:" + "-".join(missing)
    if len(elements) < constraints.min_elements:
        return "too_few_elements"
    if constraints.max_elements is not None and len(elements) > constraints.max_elements:
        return "too_many_elements"
    if constraints.max_atoms is not None and len(structure) > constraints.max_atoms:
        return "too_many_atoms"
    return ""


def pareto_front(points) -> np.ndarray:
    """Non-dominated rows of `(N, K)` points, every column minimised; rows with NaN are never on the front.

    A row is dominated when another is <= in every column and < in at least one. O(N^2 K), fine for the few
    hundred oracle-scored candidates of a run.
    """
    points = np.asarray(points, dtype=float)
    finite = np.isfinite(points).all(axis=1)
    front = finite.copy()
    for i in np.nonzero(finite)[0]:
        others = points[finite]
        dominated = np.any(np.all(others <= points[i], axis=1) & np.any(others < points[i], axis=1))
        front[i] = not dominated
    return front
