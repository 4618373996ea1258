"""Failure-mode monitors of the design loop, read after every round, each able to warn, re-steer or stop it.

| monitor | measures (this round) | fires when | "steer" does |
|---|---|---|---|
| exploitation | mean |surrogate - oracle| / surrogate std on the shortlist (z); mean shortlist std / median std of all screened candidates (disagreement ratio) | z > exploitation_max_z or ratio > disagreement_max_ratio | inflate the surrogate std x2 (a more cautious acquisition) and halve the CMA-ES step (tighter trust region) |
| diversity | unique fraction of valid candidates; spread = mean pairwise feature distance | uniqueness < min_uniqueness or spread < min_spread_ratio x the first round's | guidance x0.7 (floor 0.5) and CMA-ES step x1.5 |
| shift | fraction of valid candidates whose distance to the k-th nearest training point exceeds the shift_quantile of the training points' own leave-one-out k-NN distances | fraction > max_shift_fraction | from now on the shortlist skips out-of-distribution candidates; CMA-ES step halved |
| synthesizability | among oracle-scored candidates: stable rate (E_hull <= e_hull_max), fraction of the stable ones that fail SMACT | stable-not-SMACT fraction > max_stable_not_smact or stable rate < min_stable_rate | the screen starts rejecting SMACT failures |

Density is a k-nearest-neighbour estimate (Loftsgaarden & Quesenberry, Ann. Math. Stat. 1965: density ~ 1 / r_k^d),
compared through r_k itself, in one of two feature spaces: the composition fingerprint standardised with the
training statistics (default; cheap, no model needed) or the aligned model's crystal embedding (the shared latent).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmcrystal.design.config import MonitorConfig

__all__ = [
    "MonitorReading",
    "DensityReference",
    "composition_features",
    "AlignedCrystalFeatures",
    "surrogate_exploitation",
    "diversity_collapse",
    "distribution_shift",
    "synthesizability_gap",
    "feature_spread",
    "steer",
]

log = logging.getLogger(__name__)

DEGENERATE_STD = 1e-6  # a surrogate std at or below this (a single deterministic model) gives no z-score


@dataclass
class MonitorReading:
    """One monitor in one round.

    Attributes:
        name: exploitation, diversity, shift or synthesizability.
        values: The measured numbers (NaN where there was nothing to measure).
        fired: Whether a threshold was crossed.
        reason: Which threshold, in words.
        action: The configured action when fired ("warn", "steer", "stop"), else "".
    """

    name: str
    values: dict[str, float] = field(default_factory=dict)
    fired: bool = False
    reason: str = ""
    action: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reading(name: str, values: dict, reasons: list[str], cfg: MonitorConfig) -> MonitorReading:
    fired = bool(reasons)
    return MonitorReading(name, values, fired, "; ".join(reasons), cfg.actions.get(name, "warn") if fired else "")


def _mean(values) -> float:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(values)) if values else math.nan


# -------------------------------------------------------------------------------------------------- features
def composition_features(structures: Sequence) -> np.ndarray:
    """Magpie-style composition fingerprints `(N, 114)`."""
    from mmcrystal.evaluation.fingerprints import composition_fingerprint

    return np.asarray([composition_fingerprint(s.composition) for s in structures], dtype=float).reshape(-1, 114)


class AlignedCrystalFeatures:
    """The aligned model's L2-normalised crystal embeddings `(N, latent)` (the shared latent space).

    Args:
        folder: Folder written by `AlignmentPretraining.save_pretrained`.
    """

    def __init__(self, folder: str) -> None:
        from mmcrystal.tasks.alignment import AlignmentPretraining

        self.model = AlignmentPretraining.load_model(folder).eval()

    def __call__(self, structures: Sequence) -> np.ndarray:
        import torch

        from mmcrystal.data.batch import CrystalBatch

        if not structures:
            return np.zeros((0, self.model.config.latent_dim))
        counts = torch.tensor([len(s) for s in structures], dtype=torch.long)
        batch = CrystalBatch(
            atomic_numbers=torch.tensor(np.concatenate([s.atomic_numbers for s in structures]), dtype=torch.long),
            frac_coords=torch.tensor(np.concatenate([s.frac_coords for s in structures]), dtype=torch.float32),
            lattice=torch.tensor(np.stack([s.lattice.matrix for s in structures]), dtype=torch.float32),
            num_atoms=counts,
            batch=torch.repeat_interleave(torch.arange(len(structures)), counts),
        )
        with torch.no_grad():
            return self.model.encode("crystal", batch).float().numpy()


class DensityReference:
    """Training features for the shift monitor: standardisation, k-NN distances and the out-of-distribution cut.

    Args:
        features: `(M, F)` training features.
        k: Neighbour rank.
        quantile: Quantile of the training points' leave-one-out k-NN distances used as the cut.
        standardise: Standardise features with the training mean/std (composition features; not embeddings).
        max_points: Training points kept (seeded subset) to bound the cost of distances.
        seed: Subset seed.
    """

    def __init__(self, features, k: int = 5, quantile: float = 0.95, standardise: bool = True,
                 max_points: int = 4000, seed: int = 0) -> None:  # fmt: skip
        x = np.asarray(features, dtype=float)
        if len(x) <= k:
            raise ValueError(f"the density reference needs more than k={k} training points, got {len(x)}")
        if len(x) > max_points:
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))]
        self.mean = x.mean(0) if standardise else np.zeros(x.shape[1])
        std = x.std(0) if standardise else np.ones(x.shape[1])
        self.std = np.where(std < 1e-9, 1.0, std)
        self.points, self.k = self.transform(x), k
        own = self._kth_distance(self.points, leave_one_out=True)
        self.cut = float(np.quantile(own, quantile))

    def transform(self, features) -> np.ndarray:
        return (np.asarray(features, dtype=float) - self.mean) / self.std

    def _kth_distance(self, z: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
        out = np.empty(len(z))
        rank = self.k if leave_one_out else self.k - 1  # a training point's nearest neighbour is itself
        for lo in range(0, len(z), 512):
            d = np.sqrt(np.maximum(((z[lo : lo + 512, None, :] - self.points[None]) ** 2).sum(-1), 0.0))
            out[lo : lo + 512] = np.partition(d, rank, axis=1)[:, rank]
        return out

    def knn_distance(self, features) -> np.ndarray:
        """Distance `(N,)` of each candidate to its k-th nearest training point (standardised units)."""
        if len(features) == 0:
            return np.zeros(0)
        return self._kth_distance(self.transform(features))


def feature_spread(features, density: DensityReference | None = None) -> float:
    """Mean pairwise Euclidean distance of a round's candidates (standardised like the training data)."""
    x = np.asarray(features, dtype=float)
    if len(x) < 2:
        return math.nan
    if density is not None:
        x = density.transform(x)
    d = np.sqrt(((x[:, None, :] - x[None]) ** 2).sum(-1))
    return float(d[np.triu_indices(len(x), 1)].mean())


# --------------------------------------------------------------------------------------------------- monitors
def surrogate_exploitation(shortlist: Sequence[dict], screened: Sequence[dict], names: Sequence[str],
                           cfg: MonitorConfig) -> MonitorReading:  # fmt: skip
    """Surrogate-vs-oracle gap and ensemble disagreement of the shortlist (rows with sur_<p>_mean/_std, <p>)."""
    z, gaps, degenerate = [], {}, 0
    for name in names:
        errors = [(r[f"sur_{name}_mean"] - r[name], r[f"sur_{name}_std"]) for r in shortlist
                  if r.get("oracle_status") == "ok" and math.isfinite(r.get(name, math.nan))]  # fmt: skip
        gaps[f"gap_{name}"] = _mean(abs(e) for e, _ in errors)
        gaps[f"bias_{name}"] = _mean(e for e, _ in errors)
        z += [abs(e) / s for e, s in errors if s > DEGENERATE_STD]
        degenerate += sum(s <= DEGENERATE_STD for _, s in errors)
    selected = _mean(r[f"sur_{n}_std"] for r in shortlist for n in names)
    typical = [r[f"sur_{n}_std"] for r in screened for n in names if f"sur_{n}_std" in r]
    ratio = selected / float(np.median(typical)) if typical and np.median(typical) > 0 else math.nan
    values = {"z": _mean(z), "disagreement_ratio": ratio, "zero_std": degenerate, **gaps}
    reasons = []
    if degenerate:  # a deterministic surrogate: z is undefined for these rows, not infinite
        log.warning("exploitation: %d shortlisted predictions have zero surrogate std; their z is not scored (set "
                    "surrogate.residual_std or use an ensemble)", degenerate)  # fmt: skip
    if values["z"] > cfg.exploitation_max_z:
        reasons.append(f"|surrogate - oracle| / std = {values['z']:.2f} > {cfg.exploitation_max_z}")
    if ratio > cfg.disagreement_max_ratio:
        reasons.append(f"shortlist disagreement {ratio:.2f}x the median > {cfg.disagreement_max_ratio}")
    return _reading("exploitation", values, reasons, cfg)


def diversity_collapse(rows: Sequence[dict], spread: float, baseline: float | None, cfg: MonitorConfig):
    """Uniqueness of the candidates that reached the uniqueness check, and the spread against the first round's."""
    checked = [r for r in rows if "unique" in r]
    uniqueness = sum(bool(r["unique"]) for r in checked) / len(checked) if checked else math.nan
    ratio = spread / baseline if baseline and math.isfinite(spread) else math.nan
    values = {"uniqueness": uniqueness, "spread": spread, "spread_ratio": ratio, "n_checked": float(len(checked))}
    reasons = []
    if uniqueness < cfg.min_uniqueness:
        reasons.append(f"uniqueness {uniqueness:.2f} < {cfg.min_uniqueness}")
    if ratio < cfg.min_spread_ratio:
        reasons.append(f"spread {ratio:.2f} of the first round's < {cfg.min_spread_ratio}")
    return _reading("diversity", values, reasons, cfg)


def distribution_shift(knn: np.ndarray, cut: float, cfg: MonitorConfig) -> MonitorReading:
    """Fraction of valid candidates beyond the training density cut."""
    knn = np.asarray(knn, dtype=float)
    fraction = float(np.mean(knn > cut)) if len(knn) else math.nan
    values = {"ood_fraction": fraction, "median_knn_over_cut": float(np.median(knn) / cut) if len(knn) else math.nan}
    reasons = [f"{fraction:.2f} of candidates out of distribution > {cfg.max_shift_fraction}"] if (
        fraction > cfg.max_shift_fraction) else []  # fmt: skip
    return _reading("shift", values, reasons, cfg)


def synthesizability_gap(scored: Sequence[dict], e_hull_max: float, cfg: MonitorConfig) -> MonitorReading:
    """Stable rate and SMACT validity of stable oracle-scored candidates (rows with e_hull and smact_valid)."""
    judged = [r for r in scored if math.isfinite(r.get("e_hull", math.nan))]
    stable = [r for r in judged if r["e_hull"] <= e_hull_max]
    stable_rate = len(stable) / len(judged) if judged else math.nan
    not_smact = sum(not r.get("smact_valid", False) for r in stable) / len(stable) if stable else math.nan
    values = {"stable_rate": stable_rate, "stable_not_smact": not_smact,
              "median_e_hull": float(np.median([r["e_hull"] for r in judged])) if judged else math.nan}  # fmt: skip
    reasons = []
    if not_smact > cfg.max_stable_not_smact:
        reasons.append(f"{not_smact:.2f} of stable candidates fail SMACT > {cfg.max_stable_not_smact}")
    if stable_rate < cfg.min_stable_rate:
        reasons.append(f"stable rate {stable_rate:.2f} < {cfg.min_stable_rate}")
    return _reading("synthesizability", values, reasons, cfg)


# ---------------------------------------------------------------------------------------------------- steering
def steer(readings: Sequence[MonitorReading], state, proposer) -> list[str]:
    """Apply the actions of fired monitors to the loop state and the proposer; returns what was done.

    `state` needs `std_inflation`, `guidance`, `ood_filter`, `require_smact` and `stopped` attributes.
    """
    done = []
    for reading in readings:
        if not reading.fired or reading.action == "warn":
            continue
        if reading.action == "stop":
            state.stopped = f"monitor:{reading.name}"
            done.append(f"stop ({reading.name}: {reading.reason})")
            continue
        if reading.name == "exploitation":
            state.std_inflation = min(state.std_inflation * 2.0, 64.0)
            proposer.scale_step(0.5)
            done.append(f"surrogate std x{state.std_inflation:g}, CMA-ES step halved")
        elif reading.name == "diversity":
            state.guidance = max(0.5, state.guidance * 0.7)
            proposer.scale_step(1.5)
            done.append(f"guidance -> {state.guidance:.3g}, CMA-ES step x1.5")
        elif reading.name == "shift":
            state.ood_filter = True
            proposer.scale_step(0.5)
            done.append("shortlist skips out-of-distribution candidates, CMA-ES step halved")
        elif reading.name == "synthesizability":
            state.require_smact = True
            done.append("screen requires SMACT validity")
    for line in done:
        log.info("monitor steering: %s", line)
    return done
