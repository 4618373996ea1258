"""A toy design problem with a known optimum, built in code.

The "decoder" returns random ionic binaries (random positions in a cubic cell) whose volume per atom encodes a
property: band_gap = (V / atom - 10 Å^3) / 2 eV. Asked for a band gap c it delivers h(c) = 0.5 c + 1 (plus
noise 0.05 eV): it is miscalibrated, so plain conditional sampling at the target misses and the condition that
hits a window centred on y* is c* = 2 (y* - 1). The oracle reads the property exactly; surrogates read it exactly
plus a chosen bias.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from pymatgen.core import Lattice, Structure

from mmcrystal.design.config import BudgetConfig, DesignConfig, OracleConfig, PropertyObjective, StrategyConfig

CATIONS = {"Li": 1, "Na": 1, "K": 1, "Rb": 1, "Cs": 1, "Mg": 2, "Ca": 2, "Sr": 2, "Ba": 2, "Zn": 2, "Al": 3, "Y": 3}
ANIONS = {"F": -1, "Cl": -1, "Br": -1, "I": -1, "O": -2, "S": -2, "Se": -2}
PRIOR_MEAN, PRIOR_STD = 1.5, 1.0  # the "training" distribution of the conditioned band gap (eV)


def response(condition: float) -> float:
    """The band gap the toy decoder delivers for a condition (eV)."""
    return 0.5 * condition + 1.0


def optimum_condition(target: float) -> float:
    return 2.0 * (target - 1.0)


def band_gap_of(structure) -> float:
    return (structure.volume / len(structure) - 10.0) / 2.0


def ionic_binary(rng: np.random.Generator, band_gap: float) -> Structure:
    """A charge-balanced binary (2-3 formula units) with random positions (>= 1.2 Å apart) and volume encoding `band_gap`."""
    cation = list(CATIONS)[rng.integers(len(CATIONS))]
    anion = list(ANIONS)[rng.integers(len(ANIONS))]
    qc, qa = CATIONS[cation], -ANIONS[anion]
    g = np.gcd(qc, qa)
    units = int(rng.integers(2, 4))  # 2-3 formula units: random cells of 4-15 atoms rarely match each other
    species = ([cation] * (qa // g) + [anion] * (qc // g)) * units
    volume = (10.0 + 2.0 * max(band_gap, 0.05)) * len(species)
    a = volume ** (1 / 3)
    while True:
        frac = rng.random((len(species), 3))
        structure = Structure(Lattice.cubic(a), species, frac)
        if len(species) == 1 or structure.distance_matrix[np.triu_indices(len(species), 1)].min() > 1.2:
            return structure


class ToyGenerator:
    """`CrystalGenerator.sample`'s surface; records every request."""

    def __init__(self, noise: float = 0.05) -> None:
        self.noise, self.requests = noise, []
        self.model = type("M", (), {"normalization": {"properties": {"band_gap": {"mean": PRIOR_MEAN,
                                                                                  "std": PRIOR_STD}}}})()  # fmt: skip

    def sample(self, prompt=None, properties=None, n=16, steps=50, guidance=2.0, seed=0, **_):
        self.requests.append({"properties": properties, "n": n, "guidance": guidance, "seed": seed})
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            c = properties["band_gap"] if properties else rng.normal(PRIOR_MEAN, PRIOR_STD)
            out.append(ionic_binary(rng, response(c) + self.noise * rng.standard_normal()))
        return out


class ToySurrogate:
    """Exact band gap plus `bias` and exact atom count, constant std; `fine_tune` learns the band-gap bias from
    labels (active learning)."""

    property_names = ["band_gap", "atoms"]

    def __init__(self, bias: float = 0.0, std: float = 0.1) -> None:
        self.bias, self.std = bias, std

    def predict(self, structures):
        mean = np.array([[band_gap_of(s) + self.bias, len(s)] for s in structures]).reshape(-1, 2)
        return mean, np.full_like(mean, self.std)

    def fine_tune(self, structures, targets, steps, lr, seed):
        predicted, _ = self.predict(structures)
        return ToySurrogate(self.bias - float(np.nanmean(predicted[:, 0] - targets[:, 0])), self.std)


class ToyOracle:
    """Exact band gap; nitrogen-free binaries are stable (E_hull 0), iodides sit 0.2 eV/atom above the hull."""

    def __init__(self, fail_at_call: int | None = None) -> None:
        self.calls, self.fail_at_call = 0, fail_at_call

    def evaluate(self, structures):
        rows = []
        for s in structures:
            self.calls += 1
            if self.fail_at_call is not None and self.calls == self.fail_at_call:
                raise RuntimeError("oracle interrupted (test)")
            e_hull = 0.2 if "I" in {el.symbol for el in s.composition.elements} else 0.0
            rows.append({"band_gap": band_gap_of(s), "atoms": float(len(s)), "e_hull": e_hull, "hull_status": "ok",
                         "oracle_status": "ok"})  # fmt: skip
        return rows

    def counters(self):
        return {"oracle_calls": self.calls, "potential_evaluations": 0.0}


def write_reference(folder, n: int = 30, seed: int = 123) -> str:
    """`n` toy training structures as CIF files (with the band gap encoded as in the decoder's output)."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        ionic_binary(rng, rng.normal(PRIOR_MEAN, PRIOR_STD)).to(filename=str(folder / f"train_{i:03d}.cif"))
    return str(folder)


WINDOW = PropertyObjective(name="band_gap", low=2.9, high=3.1, scale=0.5)  # hit by the condition c* = 4.0


def toy_config(out, toy_reference: tuple[str, str], **changes) -> DesignConfig:
    """A CMA-ES run on the toy problem: 8 rounds of 24 crystals, 4 oracle calls per round, no CHGNet."""
    reference, cache = toy_reference
    cfg = DesignConfig(
        out=str(out),
        reference=[reference],
        cache_dir=cache,
        objectives=[WINDOW],
        budget=BudgetConfig(max_rounds=8, samples_per_round=24, oracle_per_round=4, max_oracle_calls=100),
        strategy=StrategyConfig(kind="cmaes", sigma0=0.5),
        oracle=OracleConfig(stability="none"),
    )
    return replace(cfg, **changes)


def run_toy(cfg: DesignConfig, surrogate=None, oracle=None, **kwargs) -> dict:
    """`run_design` with the toy decoder, an exact surrogate and the exact oracle unless others are given."""
    from mmcrystal.design.run import run_design

    return run_design(cfg, ToyGenerator(), surrogate or ToySurrogate(), oracle or ToyOracle(), **kwargs)
