"""Proposal strategies: which condition(s) the decoder is asked for in a round, and how they learn from scores.

- `RandomProposer`: the decoder without a property condition (its prompt only, if any): the baseline.
- `ConditionalProposer`: the objectives' targets as the property condition, every round (plain conditional
  sampling).
- `CmaesProposer`: CMA-ES over the condition vector z (one standardised value per conditioned property:
  value = mean + std * z, the statistics the decoder's `ConditionEncoder` standardises with before embedding the
  values into condition tokens). Each round asks lambda vectors, the decoder samples a group of crystals from
  each, and the group's score (mean surrogate acquisition of its crystals, 0 for crystals that fail the screen)
  is told back. Starts at the targets. This optimises the decoder's input where the decoder's response to its
  condition is miscalibrated; text-embedding (shared-latent) conditions are not optimised here because the
  generator's public API takes a prompt, not an embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmcrystal.design.cmaes import CMAES
from mmcrystal.design.config import PropertyObjective, StrategyConfig

__all__ = ["Proposal", "RandomProposer", "ConditionalProposer", "CmaesProposer", "build_proposer", "condition_stats"]

PENALTY = 1.0  # fitness penalty per squared standard deviation outside the bounds (Hansen's tutorial, B.3)


@dataclass
class Proposal:
    """One group of crystals sampled with one condition.

    Attributes:
        index: Group index within the round.
        properties: Property condition in physical units (None: no property condition).
        z: The standardised condition vector (CMA-ES point, before clipping), or None.
        n: Crystals to sample.
    """

    index: int
    properties: dict[str, float] | None
    z: list[float] | None
    n: int


def condition_stats(generator, strategy: StrategyConfig, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """{name: {mean, std}} of the conditioned properties: the config's, else the decoder's normalisation."""
    stats = strategy.condition_stats
    if stats is None:
        normalization = getattr(getattr(generator, "model", None), "normalization", None) or {}
        stats = normalization.get("properties") or {}
    missing = [n for n in names if n not in stats]
    if missing:
        raise ValueError(
            f"no mean/std for conditioned properties {missing}: the decoder has none; set strategy.condition_stats"
        )
    return {n: {"mean": float(stats[n]["mean"]), "std": max(float(stats[n]["std"]), 1e-6)} for n in names}


class RandomProposer:
    """No property condition."""

    def __init__(self) -> None:
        self.step_scale = 1.0

    def ask(self, n: int) -> list[Proposal]:
        return [Proposal(0, None, None, n)]

    def tell(self, proposals: Sequence[Proposal], scores: Sequence[float]) -> None:
        pass

    def scale_step(self, factor: float) -> None:
        """Trust-region changes have nothing to act on here."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ConditionalProposer(RandomProposer):
    """The objectives' targets as the property condition."""

    def __init__(self, objectives: Sequence[PropertyObjective]) -> None:
        super().__init__()
        self.targets = {o.name: o.target for o in objectives}
        if not self.targets:
            raise ValueError("conditional sampling needs at least one objective with condition: true")

    def ask(self, n: int) -> list[Proposal]:
        return [Proposal(0, dict(self.targets), None, n)]


class CmaesProposer:
    """CMA-ES over the standardised property-condition vector (module docstring).

    Args:
        objectives: Conditioned objectives (one dimension each).
        stats: {name: {mean, std}} of those properties.
        strategy: sigma0, bounds, population.
        seed: Seed of the CMA-ES sampler.
    """

    def __init__(self, objectives, stats, strategy: StrategyConfig, seed: int) -> None:
        if not objectives:
            raise ValueError("CMA-ES needs at least one objective with condition: true")
        self.names = [o.name for o in objectives]
        self.mean = np.array([stats[n]["mean"] for n in self.names])
        self.std = np.array([stats[n]["std"] for n in self.names])
        self.bounds = float(strategy.bounds)
        start = np.clip((np.array([o.target for o in objectives]) - self.mean) / self.std, -self.bounds, self.bounds)
        self.es = CMAES(start, strategy.sigma0, strategy.population, seed)

    def properties(self, z) -> dict[str, float]:
        """Condition values in physical units of a standardised vector (clipped to the bounds)."""
        values = self.mean + self.std * np.clip(np.asarray(z, dtype=float), -self.bounds, self.bounds)
        return {n: float(v) for n, v in zip(self.names, values, strict=True)}

    def ask(self, n: int) -> list[Proposal]:
        points = self.es.ask()
        lam = len(points)
        if n < lam:
            raise ValueError(f"{n} samples per round cannot cover a CMA-ES population of {lam}")
        sizes = [n // lam + (i < n % lam) for i in range(lam)]
        return [
            Proposal(i, self.properties(z), z.tolist(), size)
            for i, (z, size) in enumerate(zip(points, sizes, strict=True))
        ]

    def tell(self, proposals: Sequence[Proposal], scores: Sequence[float]) -> None:
        """Scores: higher is better (CMA-ES minimises -score plus the out-of-bounds penalty)."""
        points = np.array([p.z for p in proposals], dtype=float)
        outside = points - np.clip(points, -self.bounds, self.bounds)
        fitness = -np.asarray(scores, dtype=float) + PENALTY * np.sum(outside**2, axis=1)
        self.es.tell(points, fitness)

    def scale_step(self, factor: float) -> None:
        """Widen (> 1) or tighten (< 1) the search: the step size sigma."""
        self.es.sigma *= float(factor)

    def state_dict(self) -> dict[str, Any]:
        return {"es": self.es.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.es = CMAES.from_state_dict(state["es"])

    def center(self) -> dict[str, float]:
        """The current CMA-ES mean as condition values."""
        return self.properties(self.es.mean)


def build_proposer(strategy: StrategyConfig, objectives: Sequence[PropertyObjective], generator, seed: int):
    """The proposer of a strategy kind."""
    conditioned = [o for o in objectives if o.condition]
    if strategy.kind == "random":
        return RandomProposer()
    if strategy.kind == "conditional":
        return ConditionalProposer(conditioned)
    if strategy.kind == "cmaes":
        stats = condition_stats(generator, strategy, [o.name for o in conditioned])
        return CmaesProposer(conditioned, stats, strategy, seed)
    raise ValueError(f"unknown strategy {strategy.kind!r} (random, conditional, cmaes)")
