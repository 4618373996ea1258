"""`PropertyPredictor`: the small interface to fine-tuned property models.

The evaluation issue uses it as an independent property model and the design loop as its surrogate:

    from mmcrystal.finetune.predictor import PropertyPredictor

    model = PropertyPredictor.from_pretrained(["runs/ft_seed0/pretrained", "runs/ft_seed1/pretrained"])  # ensemble
    mean, std = model.predict(structures)            # (N, T) numpy arrays in physical units, columns property_names
    model = model.fine_tune(new_structures, new_targets, steps=100, lr=1e-4, seed=0)   # NaN = unknown target

Uncertainty: ``std`` is the spread over ensemble members, over MC-dropout draws (``mc_samples > 1``) or over both
(all member x draw predictions pooled: the law of total variance). A single deterministic model gives std = 0.
A model trained with extra inputs (captions, XRD) predicts from the structure alone in `predict` (its fusion then
attends to a null token); `predict_samples` on prepared samples that carry those inputs uses them.
Importing this module does not import Lightning (loading a folder imports the config registry, which does).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmcrystal.finetune.data import structures_to_samples
from mmcrystal.finetune.loop import LoopSettings, predict_draws, summarize_draws, train_in_process
from mmcrystal.finetune.model import PropertyModel

__all__ = ["PropertyPredictor", "SinglePropertyModel", "KIND"]

KIND = "PropertyModel"


def _load_model(folder: str | Path, device) -> PropertyModel:
    from mmcrystal.pretrained import load_pretrained

    folder = Path(folder)
    meta_path = folder / "config.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not a fine-tuned model folder (no config.json)")
    kind = json.loads(meta_path.read_text()).get("kind")
    if kind != KIND:
        raise ValueError(f"{folder} holds a {kind!r}, not a fine-tuned {KIND}")
    model, _ = load_pretrained(folder, PropertyModel, map_location="cpu")
    return model.to(device).eval()


class PropertyPredictor:
    """One fine-tuned model or an ensemble of them (same tasks), predicting from pymatgen structures.

    Args:
        models: The member `PropertyModel`s.
        mc_samples: MC-dropout draws per member (0 or 1: deterministic).
        device: Where to run.
    """

    def __init__(self, models: Sequence[PropertyModel], mc_samples: int = 0, device: str | torch.device = "cpu"):
        if not models:
            raise ValueError("PropertyPredictor needs at least one model")
        keys = [m.config.target_keys for m in models]
        if any(k != keys[0] for k in keys):
            raise ValueError(f"ensemble members predict different tasks: {keys}")
        self.device = torch.device(device)
        self.models = [m.to(self.device).eval() for m in models]
        self.mc_samples = int(mc_samples)

    @classmethod
    def from_pretrained(
        cls, path: str | Path | Sequence[str | Path], mc_samples: int = 0, device: str | torch.device = "cpu"
    ) -> PropertyPredictor:
        """Load a folder written by `PropertyFinetuning.save_pretrained` (or a list of them: an ensemble)."""
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        return cls([_load_model(p, device) for p in paths], mc_samples, device)

    @property
    def property_names(self) -> list[str]:
        """The columns of `predict`'s arrays (task keys: ``band_gap``, ``band_gap>0``, ...)."""
        return list(self.models[0].config.target_keys)

    @property
    def targets(self):
        return list(self.models[0].targets)

    # ------------------------------------------------------------------------------------------- prediction
    def predict_samples(
        self, samples: Sequence[dict], batch_size: int = 64, mc_samples: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`predict` on prepared-style samples (see `mmcrystal.finetune.data`)."""
        draws_per_model = self.mc_samples if mc_samples is None else int(mc_samples)
        draws = []
        for k, model in enumerate(self.models):
            draws += predict_draws(model, samples, batch_size, draws_per_model, seed=k)
        return summarize_draws(draws, self.targets)

    def predict(
        self, structures: Sequence, batch_size: int = 64, mc_samples: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predict every task for pymatgen structures.

        Args:
            structures: Ordered pymatgen `Structure`s.
            batch_size: Crystals per forward pass.
            mc_samples: Override the MC-dropout draws per member.

        Returns:
            ``(mean, std)``, each (N, T) float64 with columns `property_names`: physical units for regression
            tasks, probability of label 1 for binary tasks, class index for multiclass tasks.
        """
        if len(structures) == 0:
            t = len(self.property_names)
            return np.zeros((0, t)), np.zeros((0, t))
        return self.predict_samples(structures_to_samples(structures), batch_size, mc_samples)

    def for_target(self, key: str) -> SinglePropertyModel:
        """A view predicting one task as (N,) arrays: the ``PropertyModel`` protocol of the evaluation stage."""
        if key not in self.property_names:
            raise KeyError(f"no task {key!r}; this predictor has {self.property_names}")
        return SinglePropertyModel(self, self.property_names.index(key))

    # ------------------------------------------------------------------------------------------- updates
    def fine_tune(
        self,
        structures: Sequence,
        targets: np.ndarray,
        steps: int = 100,
        lr: float = 1e-4,
        seed: int = 0,
        batch_size: int = 32,
    ) -> PropertyPredictor:
        """Continue training on new labelled data, in this process; returns a new predictor (this one is unchanged).

        Args:
            structures: N pymatgen structures.
            targets: (N, T) values in physical units, columns `property_names` order; NaN where unknown.
            steps: Optimiser steps per member.
            lr: Peak learning rate (no warm-up; cosine decay to 5 %).
            seed: Seed of member k is ``seed + k``.
            batch_size: Crystals per step.
        """
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != (len(structures), len(self.property_names)):
            raise ValueError(
                f"targets must be (N, T) = {(len(structures), len(self.property_names))}, got {targets.shape}"
            )
        names = list(dict.fromkeys(t.name for t in self.targets))  # property columns (a column may feed two tasks)
        values = np.full((len(structures), len(names)), np.nan)
        for t, target in enumerate(self.targets):
            known = np.isfinite(targets[:, t])
            if not known.any():
                continue
            if target.kind == "binary" and target.threshold is not None:
                raise ValueError(
                    f"task {target.key!r} is derived from column {target.name!r} by a threshold: give that column's "
                    "values through a regression task on it, not 0/1 labels"
                )
            column = names.index(target.name)
            values[known, column] = targets[known, t]
        samples = structures_to_samples(structures, values=values, names=names)
        tuned = []
        for k, model in enumerate(self.models):
            member = copy.deepcopy(model)
            settings = LoopSettings(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=0, seed=seed + k)
            train_in_process(member, samples, settings)
            tuned.append(member)
        return PropertyPredictor(tuned, self.mc_samples, self.device)

    def save_pretrained(self, folder: str | Path) -> list[Path]:
        """Write each member as a folder (``folder`` itself for one model, ``folder/member_k`` for an ensemble)."""
        from mmcrystal.pretrained import save_pretrained

        folder = Path(folder)
        if len(self.models) == 1:
            return [save_pretrained(self.models[0], self.models[0].config, folder, KIND)]
        return [save_pretrained(m, m.config, folder / f"member_{k}", KIND) for k, m in enumerate(self.models)]


class SinglePropertyModel:
    """One task of a `PropertyPredictor`: ``predict(structures) -> (mean (N,), std (N,))``."""

    def __init__(self, predictor: PropertyPredictor, column: int):
        self.predictor, self.column = predictor, column

    def predict(self, structures: Sequence) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.predictor.predict(structures)
        return mean[:, self.column], std[:, self.column]
