"""A small (mu/mu_w, lambda)-CMA-ES with an ask/tell interface and a JSON-able state, for resumable loops.

Everything follows N. Hansen, "The CMA Evolution Strategy: A Tutorial" (arXiv:1604.00772, 2016), the "default
parameters" table and the update equations of its Section 4 (positive recombination weights only, c_m = 1):

    x_k = m + sigma * B D z_k,  z_k ~ N(0, I)                               sampling      (eq. 38-40)
    m  <- m + sigma * y_w,      y_w = sum_i w_i y_{i:lambda}                 mean          (eq. 41)
    p_s <- (1 - c_s) p_s + sqrt(c_s (2 - c_s) mu_eff) C^{-1/2} y_w          step-size path (eq. 43)
    p_c <- (1 - c_c) p_c + h_s sqrt(c_c (2 - c_c) mu_eff) y_w               rank-one path  (eq. 45)
    C  <- (1 + c_1 d(h_s) - c_1 - c_mu) C + c_1 p_c p_c^T + c_mu sum_i w_i y_i y_i^T         (eq. 47)
    sigma <- sigma * exp((c_s / d_s) (|p_s| / E|N(0, I)| - 1))                              (eq. 44)

Minimises. Bounds are handled outside (the caller evaluates a clipped point and adds a penalty, the tutorial's
"penalty" approach, Section B.3).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CMAES"]


class CMAES:
    """CMA-ES on R^d.

    Args:
        mean: Initial mean `(d,)`.
        sigma: Initial step size.
        population: lambda (None: 4 + floor(3 ln d)).
        seed: Seed of the sampling generator (its state is part of `state_dict`).
    """

    def __init__(self, mean, sigma: float, population: int | None = None, seed: int = 0) -> None:
        self.mean = np.asarray(mean, dtype=float).reshape(-1)
        n = self.dim = self.mean.size
        if n < 1 or sigma <= 0:
            raise ValueError(f"CMA-ES needs a non-empty mean and sigma > 0, got d={n}, sigma={sigma}")
        self.sigma = float(sigma)
        self.population = int(population or 4 + math.floor(3 * math.log(n)))
        if self.population < 2:
            raise ValueError(f"population must be >= 2, got {self.population}")
        mu = self.population // 2
        raw = math.log((self.population + 1) / 2) - np.log(np.arange(1, mu + 1))
        self.weights = raw / raw.sum()  # (mu,) positive, summing to 1
        self.mu_eff = 1.0 / float(np.sum(self.weights**2))
        me = self.mu_eff
        self.c_c = (4 + me / n) / (n + 4 + 2 * me / n)
        self.c_s = (me + 2) / (n + me + 5)
        self.c_1 = 2 / ((n + 1.3) ** 2 + me)
        self.c_mu = min(1 - self.c_1, 2 * (me - 2 + 1 / me) / ((n + 2) ** 2 + me))
        self.d_s = 1 + 2 * max(0.0, math.sqrt((me - 1) / (n + 1)) - 1) + self.c_s
        self.chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))  # E|N(0, I)|
        self.cov = np.eye(n)
        self.p_c = np.zeros(n)
        self.p_s = np.zeros(n)
        self.generation = 0
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------------------------------------ algorithm
    def _eigen(self) -> tuple[np.ndarray, np.ndarray]:
        cov = (self.cov + self.cov.T) / 2  # keep it exactly symmetric against round-off
        values, vectors = np.linalg.eigh(cov)
        return vectors, np.sqrt(np.clip(values, 1e-20, None))  # B (d, d), D (d,)

    def ask(self) -> np.ndarray:
        """lambda candidate points `(lambda, d)`."""
        b, d = self._eigen()
        z = self.rng.standard_normal((self.population, self.dim))
        return self.mean + self.sigma * (z * d) @ b.T

    def tell(self, points, fitness) -> None:
        """Update from the points of the last `ask` and their fitness (lower is better)."""
        points, fitness = np.asarray(points, dtype=float), np.asarray(fitness, dtype=float)
        if points.shape != (self.population, self.dim) or fitness.shape != (self.population,):
            raise ValueError(f"tell expects ({self.population}, {self.dim}) points and {self.population} values")
        if not np.isfinite(fitness).all():
            raise ValueError("CMA-ES fitness values must be finite")
        order = np.argsort(fitness, kind="stable")[: len(self.weights)]
        y = (points[order] - self.mean) / self.sigma  # (mu, d) selected steps
        y_w = self.weights @ y  # (d,)
        b, d = self._eigen()
        inv_sqrt_cov = b @ np.diag(1 / d) @ b.T
        self.mean = self.mean + self.sigma * y_w
        n, me = self.dim, self.mu_eff
        self.p_s = (1 - self.c_s) * self.p_s + math.sqrt(self.c_s * (2 - self.c_s) * me) * inv_sqrt_cov @ y_w
        norm_ps = float(np.linalg.norm(self.p_s))
        threshold = (1.4 + 2 / (n + 1)) * self.chi_n
        h_s = norm_ps / math.sqrt(1 - (1 - self.c_s) ** (2 * (self.generation + 1))) < threshold
        self.p_c = (1 - self.c_c) * self.p_c + h_s * math.sqrt(self.c_c * (2 - self.c_c) * me) * y_w
        delta = (1 - h_s) * self.c_c * (2 - self.c_c)
        rank_mu = (y.T * self.weights) @ y
        self.cov = (
            (1 + self.c_1 * delta - self.c_1 - self.c_mu) * self.cov
            + self.c_1 * np.outer(self.p_c, self.p_c)
            + self.c_mu * rank_mu
        )
        self.sigma *= math.exp((self.c_s / self.d_s) * (norm_ps / self.chi_n - 1))
        self.generation += 1

    # ---------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything `load_state_dict` needs to continue exactly (JSON-able)."""
        return {
            "mean": self.mean.tolist(),
            "sigma": self.sigma,
            "population": self.population,
            "cov": self.cov.tolist(),
            "p_c": self.p_c.tolist(),
            "p_s": self.p_s.tolist(),
            "generation": self.generation,
            "rng": self.rng.bit_generator.state,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CMAES:
        es = cls(state["mean"], state["sigma"], state["population"])
        es.cov = np.asarray(state["cov"], dtype=float)
        es.p_c = np.asarray(state["p_c"], dtype=float)
        es.p_s = np.asarray(state["p_s"], dtype=float)
        es.generation = int(state["generation"])
        es.rng.bit_generator.state = state["rng"]
        return es
