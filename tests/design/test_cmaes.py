"""CMA-ES: converges on standard test functions, respects its population, and resumes exactly from its state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmcrystal.design.cmaes import CMAES


def _minimise(es: CMAES, f, generations: int) -> list[float]:
    best = []
    for _ in range(generations):
        points = es.ask()
        values = np.array([f(x) for x in points])
        es.tell(points, values)
        best.append(float(values.min()))
    return best


def test_sphere_converges_to_the_optimum():
    optimum = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
    es = CMAES(np.zeros(5), sigma=1.0, seed=1)
    best = _minimise(es, lambda x: float(np.sum((x - optimum) ** 2)), 200)
    assert es.population == 4 + int(np.floor(3 * np.log(5)))
    assert np.allclose(es.mean, optimum, atol=1e-4)
    assert best[-1] < 1e-7 < best[0]


def test_rosenbrock_needs_the_covariance_and_gets_there():
    def rosenbrock(x):
        return float(100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2)

    es = CMAES([-1.0, 1.5], sigma=0.5, seed=0)
    _minimise(es, rosenbrock, 400)
    assert np.allclose(es.mean, [1.0, 1.0], atol=1e-3)
    eigenvalues = np.linalg.eigvalsh(es.cov)
    assert eigenvalues.max() / eigenvalues.min() > 10  # the learned covariance follows the curved valley


def test_one_dimension_works():
    es = CMAES([0.0], sigma=0.5, seed=0)
    _minimise(es, lambda x: float((x[0] - 1.5) ** 2), 60)
    assert es.mean[0] == pytest.approx(1.5, abs=1e-3)


def test_state_dict_round_trip_continues_identically():
    f = lambda x: float(np.sum(x**2))  # noqa: E731
    a = CMAES([2.0, 2.0, 2.0], sigma=0.7, seed=5)
    _minimise(a, f, 7)
    b = CMAES.from_state_dict(json.loads(json.dumps(a.state_dict())))  # through JSON, as in a run folder
    assert np.array_equal(a.ask(), b.ask())
    _minimise(a, f, 5)
    _minimise(b, f, 5)
    assert np.array_equal(a.mean, b.mean) and a.sigma == b.sigma and np.array_equal(a.cov, b.cov)


def test_bad_inputs_raise():
    es = CMAES([0.0, 0.0], sigma=1.0, population=6)
    with pytest.raises(ValueError, match="expects"):
        es.tell(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        es.tell(es.ask(), np.array([0, 1, 2, np.nan, 4, 5.0]))
    with pytest.raises(ValueError, match="sigma"):
        CMAES([0.0], sigma=0.0)
