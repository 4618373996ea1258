"""Property models of the design loop: the `PropertyModel` protocol, a lazy adapter for the fine-tuned
`PropertyPredictor` (issue #8), and a cheap bootstrap ridge ensemble that satisfies the same protocol.

The loop scores screened candidates with a surrogate ensemble (mean and standard deviation per property) and sends
a shortlist to an independent oracle, whose property part is another `PropertyModel` trained separately.

`RidgeEnsemble` (Breiman's bagging, Mach. Learn. 1996, of ridge regressions on standardised features): each member
is fitted on a bootstrap resample; the predictive standard deviation combines the members' spread with the
out-of-bag residual variance (each training point predicted by the members that did not see it), so that the
reported std covers the model's irreducible error as well as its disagreement. `fine_tune` refits on the original
data plus the new labelled structures (closed form: `steps` and `lr` do not apply).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mmcrystal.evaluation.fingerprints import composition_fingerprint

__all__ = [
    "PropertyModel",
    "PretrainedPropertyModel",
    "RidgeEnsemble",
    "structure_features",
    "train_ridge_ensemble",
]

log = logging.getLogger(__name__)


@runtime_checkable
class PropertyModel(Protocol):
    """What the loop needs from a property model (the surface of `mmcrystal.finetune.predictor.PropertyPredictor`).

    Attributes:
        property_names: Names of the T predicted properties, in column order.
    """

    property_names: Sequence[str]

    def predict(self, structures: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """(mean (N, T), std (N, T)) numpy arrays in physical units."""
        ...

    def fine_tune(self, structures: Sequence, targets: np.ndarray, steps: int, lr: float, seed: int) -> PropertyModel:
        """A copy adapted to labelled structures; targets (N, T), NaN where a value is missing."""
        ...


class PretrainedPropertyModel:
    """A `PropertyPredictor` loaded from one folder or a list of folders (an ensemble), on first use.

    `mmcrystal.finetune` is imported only then, so the design package works (with other property models) where
    that package is absent.

    Args:
        paths: Folder(s) written by the fine-tuning stage.
        predictor: An already loaded predictor (what `fine_tune` returns).
        device: Device to load onto ("cpu" loads with the predictor's defaults).
    """

    def __init__(
        self,
        paths: str | Sequence[str],
        predictor: Any = None,
        device: str = "cpu",
        residual_std: dict[str, float] | None = None,
        mc_samples: int = 0,
    ) -> None:
        self.device, self.mc_samples = device, int(mc_samples)
        self.residual_std = {k: float(v) for k, v in (residual_std or {}).items()}
        self.paths = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
        if not self.paths:
            raise ValueError("PretrainedPropertyModel needs at least one folder")
        self._predictor = predictor

    @property
    def predictor(self):
        if self._predictor is None:
            try:
                from mmcrystal.finetune.predictor import PropertyPredictor
            except ImportError as exc:
                raise ImportError(
                    "loading property-model folders needs mmcrystal.finetune.predictor.PropertyPredictor (the "
                    "fine-tuning issue); without it, leave `models` empty to use the ridge ensemble"
                ) from exc
            path = self.paths[0] if len(self.paths) == 1 else self.paths
            kwargs = {} if self.device == "cpu" else {"device": self.device}
            self._predictor = PropertyPredictor.from_pretrained(path, mc_samples=self.mc_samples, **kwargs)
            unknown = set(self.residual_std) - set(self._predictor.property_names)
            if unknown:
                raise ValueError(f"residual_std for {sorted(unknown)}, which the model does not predict")
        return self._predictor

    @property
    def property_names(self) -> list[str]:
        return list(self.predictor.property_names)

    def predict(self, structures: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) `(N, T)`; std is the ensemble / MC-dropout spread and `residual_std` added in quadrature (a
        single deterministic model reports zero spread, which would make every z-score and window probability
        degenerate)."""
        mean, std = self.predictor.predict(list(structures))
        mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        residual = np.array([self.residual_std.get(n, 0.0) for n in self.property_names])  # (T,)
        return mean, np.sqrt(std**2 + residual**2)

    def fine_tune(self, structures, targets, steps: int, lr: float, seed: int) -> PretrainedPropertyModel:
        tuned = self.predictor.fine_tune(list(structures), np.asarray(targets, float), steps=steps, lr=lr, seed=seed)
        return PretrainedPropertyModel(self.paths, tuned, self.device, self.residual_std, self.mc_samples)


def structure_features(structures: Sequence, include_structure: bool = False) -> np.ndarray:
    """Composition fingerprint (114 Magpie-style statistics), plus volume per atom (Å^3), density (g/cm^3) and
    log(atoms) with `include_structure`: `(N, 114 or 117)`."""
    rows = []
    for s in structures:
        row = composition_fingerprint(s.composition)
        if include_structure:
            row = np.concatenate([row, [s.volume / len(s), float(s.density), np.log(len(s))]])
        rows.append(row)
    return np.asarray(rows, dtype=float).reshape(len(rows), -1)


def _ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """Weighted ridge with an unpenalised intercept: coefficients `(F + 1,)`, intercept last."""
    xb = np.concatenate([x, np.ones((len(x), 1))], axis=1)  # (n, F + 1)
    penalty = alpha * np.eye(xb.shape[1])
    penalty[-1, -1] = 0.0
    gram = xb.T @ (xb * w[:, None]) + penalty
    return np.linalg.solve(gram, xb.T @ (w * y))


class RidgeEnsemble:
    """Bootstrap ensemble of ridge regressions on `structure_features` (module docstring).

    Args:
        property_names: The T properties.
        members: Ensemble size.
        alpha: Ridge penalty on standardised features.
        include_structure: Add volume, density and atom count to the composition features.
        seed: Seed of the bootstrap resamples.
    """

    def __init__(
        self,
        property_names: Sequence[str],
        members: int = 8,
        alpha: float = 1.0,
        include_structure: bool = False,
        seed: int = 0,
    ) -> None:
        if members < 2:
            raise ValueError("a ridge ensemble needs at least 2 members for an uncertainty")
        self.property_names = list(property_names)
        self.members, self.alpha, self.include_structure, self.seed = members, alpha, include_structure, seed
        self.features = np.zeros((0, 0))
        self.targets = np.zeros((0, len(self.property_names)))
        self.sample_weight = np.zeros(0)

    # -------------------------------------------------------------------------------------------------- fitting
    def fit(self, structures: Sequence, targets, sample_weight=None) -> RidgeEnsemble:
        """Fit on structures and targets `(N, T)` (NaN = missing, skipped per property)."""
        return self.fit_features(structure_features(structures, self.include_structure), targets, sample_weight)

    def fit_features(self, features, targets, sample_weight=None) -> RidgeEnsemble:
        x, y = np.asarray(features, dtype=float), np.asarray(targets, dtype=float).reshape(len(features), -1)
        if y.shape[1] != len(self.property_names):
            raise ValueError(f"targets have {y.shape[1]} columns for properties {self.property_names}")
        self.features, self.targets = x, y
        self.sample_weight = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self.x_mean, self.x_std = x.mean(0), x.std(0)
        self.x_std[self.x_std < 1e-9] = 1.0
        z = (x - self.x_mean) / self.x_std
        rng = np.random.default_rng(self.seed)
        self.coefs = np.full((len(self.property_names), self.members, x.shape[1] + 1), np.nan)
        self.oob_var = np.zeros(len(self.property_names))
        for t, name in enumerate(self.property_names):
            rows = np.nonzero(np.isfinite(y[:, t]))[0]
            if len(rows) < 3:
                raise ValueError(f"property {name!r}: {len(rows)} labelled structures, need at least 3")
            oob_sum, oob_count = np.zeros(len(rows)), np.zeros(len(rows))
            for m in range(self.members):
                draw = rng.integers(0, len(rows), len(rows))  # bootstrap resample (positions in `rows`)
                counts = np.bincount(draw, minlength=len(rows))
                w = counts * self.sample_weight[rows]
                self.coefs[t, m] = _ridge(z[rows], y[rows, t], w, self.alpha)
                out = counts == 0
                oob_sum[out] += self._linear(z[rows][out], t, m)
                oob_count[out] += 1
            seen = oob_count > 0
            residual = y[rows[seen], t] - oob_sum[seen] / oob_count[seen]
            self.oob_var[t] = float(np.mean(residual**2)) if seen.any() else 0.0
        return self

    def _linear(self, z: np.ndarray, t: int, m: int) -> np.ndarray:
        return z @ self.coefs[t, m, :-1] + self.coefs[t, m, -1]

    # ----------------------------------------------------------------------------------------------- prediction
    def predict_features(self, features) -> tuple[np.ndarray, np.ndarray]:
        z = (np.asarray(features, dtype=float) - self.x_mean) / self.x_std
        per_member = np.stack([[self._linear(z, t, m) for m in range(self.members)] for t in range(len(self.coefs))])
        mean = per_member.mean(axis=1).T  # (N, T)
        std = np.sqrt(per_member.var(axis=1).T + self.oob_var)  # ensemble spread + out-of-bag residual variance
        return mean, std

    def predict(self, structures: Sequence) -> tuple[np.ndarray, np.ndarray]:
        if not len(structures):
            return np.zeros((0, len(self.property_names))), np.zeros((0, len(self.property_names)))
        return self.predict_features(structure_features(structures, self.include_structure))

    def fine_tune(self, structures, targets, steps: int = 0, lr: float = 0.0, seed: int = 0) -> RidgeEnsemble:
        """A new ensemble refitted on the original data plus `structures` (closed form; steps and lr unused)."""
        new_x = structure_features(structures, self.include_structure)
        new_y = np.asarray(targets, dtype=float).reshape(len(structures), -1)
        tuned = RidgeEnsemble(self.property_names, self.members, self.alpha, self.include_structure, seed)
        return tuned.fit_features(
            np.concatenate([self.features, new_x]),
            np.concatenate([self.targets, new_y]),
            np.concatenate([self.sample_weight, np.ones(len(new_x))]),
        )


def train_ridge_ensemble(
    paths: Sequence[str],
    property_names: Sequence[str],
    members: int = 8,
    alpha: float = 1.0,
    include_structure: bool = False,
    max_train: int | None = None,
    seed: int = 0,
) -> RidgeEnsemble:
    """A `RidgeEnsemble` on the labelled structures of `paths` (records without a label count as missing)."""
    from mmcrystal.evaluation.inputs import load_structures

    records, structures = load_structures(list(paths))
    if max_train is not None and len(structures) > max_train:
        keep = np.sort(np.random.default_rng(seed).choice(len(structures), max_train, replace=False))
        records, structures = [records[i] for i in keep], [structures[i] for i in keep]
    targets = np.array([[(r.properties or {}).get(p, np.nan) for p in property_names] for r in records], float)
    missing = np.isnan(targets).all(axis=0)
    if missing.any():
        names = [p for p, m in zip(property_names, missing, strict=True) if m]
        raise ValueError(f"no structure of {list(paths)} has a label for {names}")
    log.info("ridge ensemble: %d structures of %s, properties %s", len(structures), list(paths), property_names)
    return RidgeEnsemble(property_names, members, alpha, include_structure, seed).fit(structures, targets)
