"""`CrystalDiffusionModel`: condition encoder + denoiser + atom-count head (+ optional composition-first model) + the
three diffusion processes, with the dataset statistics they need, rebuilt from one `DiffusionModelConfig` (the
`config.json` of a pretrained folder).

`CrystalDiffusion` (mmcrystal/tasks/diffusion.py) trains it; `CrystalGenerator` samples from it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmcrystal.config import register_config
from mmcrystal.diffusion import (
    Condition,
    CrystalDenoiser,
    DenoiserConfig,
    DiffusionConfig,
    JointDiffusion,
    LatticeNormalization,
    NumAtomsConfig,
    NumAtomsPredictor,
    drop_conditions,
    histogram_prior,
)
from mmcrystal.diffusion.composition_model import CompositionModel, CompositionModelConfig, reduce_formulas
from mmcrystal.diffusion.conditioning import ConditionConfig, ConditionEncoder, ConditionInputs

__all__ = [
    "XRD_GRID_KEYS",
    "CrystalDiffusionModel",
    "DiffusionModelConfig",
    "model_fingerprint",
    "normalization_from_manifest",
]

# The XRD settings a measured pattern needs to be put on the training grid (`mmcrystal.modalities.xrd.XRDConfig`).
XRD_GRID_KEYS = ("wavelength", "two_theta_min", "two_theta_max", "n_bins", "normalization")


@register_config
@dataclass
class DiffusionModelConfig:
    """Everything that rebuilds a trained conditional decoder (the `config.json` of a pretrained folder).

    Attributes:
        denoiser: The network (`cond_dim` and `num_classes` are synchronised with `conditions` and `diffusion`).
        diffusion: The three corruption processes.
        conditions: The condition encoder.
        num_atoms: The atom-count head (`cond_dim` synchronised with `conditions`).
        composition: The composition-first model p(reduced formula | condition), trained only when `enabled`
            (`cond_dim`, `num_elements` and `max_atoms` synchronised).
        normalization: Dataset statistics as plain JSON (`normalization_from_manifest`): "lattice"
            (`LatticeNormalization` fields), "properties" ({name: {mean, std}}), "num_atoms_histogram" and, when
            the data had simulated XRD, "xrd" (the 2θ grid of the patterns, `XRD_GRID_KEYS`).
    """

    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    conditions: ConditionConfig = field(default_factory=ConditionConfig)
    num_atoms: NumAtomsConfig = field(default_factory=NumAtomsConfig)
    composition: CompositionModelConfig = field(default_factory=CompositionModelConfig)
    normalization: dict[str, Any] | None = None


def _plain(value):
    """A tuple of floats -> list, a number -> float (JSON of `LatticeNormalization` fields)."""
    return [float(v) for v in value] if isinstance(value, list | tuple) else float(value)


def normalization_from_manifest(manifest: dict) -> dict[str, Any]:
    """Lattice, property and atom-count statistics of a prepared dataset's reference (training) split, and the 2θ
    grid of its simulated XRD patterns (so that a measured pattern can be resampled onto it at sampling time)."""
    lattice = LatticeNormalization.from_manifest(manifest)
    reference = manifest["normalization"].get("reference_split") or "train"
    properties = {
        name: {"mean": float(s["mean"]), "std": float(s["std"])}
        for name, s in manifest["normalization"].get("properties", {}).items()
        if "mean" in s
    }
    out = {
        "lattice": {f.name: _plain(getattr(lattice, f.name)) for f in fields(lattice)},
        "properties": properties,
        "num_atoms_histogram": dict(manifest.get("stats", {}).get(reference, {}).get("num_atoms_histogram", {})),
    }
    xrd = (manifest.get("modalities") or {}).get("xrd")
    if xrd:
        out["xrd"] = {key: xrd[key] for key in XRD_GRID_KEYS if key in xrd}
    return out


def _synchronised(cfg: DiffusionModelConfig) -> DiffusionModelConfig:
    width, classes = cfg.conditions.cond_dim, cfg.diffusion.types.num_classes
    return replace(
        cfg,
        denoiser=replace(cfg.denoiser, cond_dim=width, num_classes=classes),
        num_atoms=replace(cfg.num_atoms, cond_dim=width),
        composition=replace(
            cfg.composition,
            cond_dim=width,
            num_elements=min(classes, cfg.conditions.num_elements),
            max_atoms=cfg.num_atoms.max_atoms,
        ),
    )


class CrystalDiffusionModel(nn.Module):
    """Condition encoder + denoiser + atom-count head + the diffusion processes, with the dataset statistics.

    Args:
        config: `DiffusionModelConfig`.
    """

    def __init__(self, config: DiffusionModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = _synchronised(config or DiffusionModelConfig())
        self.conditions = ConditionEncoder(cfg.conditions)
        self.denoiser = CrystalDenoiser(cfg.denoiser)
        self.num_atoms = NumAtomsPredictor(cfg.num_atoms)
        self.composition = CompositionModel(cfg.composition) if cfg.composition.enabled else None
        self.diffusion = JointDiffusion(cfg.diffusion)
        self.register_buffer("atom_count_prior", torch.zeros(0), persistent=False)
        if cfg.normalization is not None:
            self.set_normalization(cfg.normalization)

    @property
    def normalization(self) -> dict[str, Any] | None:
        return self.config.normalization

    @property
    def max_atoms(self) -> int:
        """Largest atom count the atom-count head (and so the training data) covers."""
        return int(self.config.num_atoms.max_atoms)

    def set_normalization(self, normalization: dict[str, Any]) -> None:
        """Adopt dataset statistics (lattice standardisation, property standardisation, atom-count histogram)."""
        self.config = replace(self.config, normalization=normalization)
        lattice = LatticeNormalization(
            **{k: tuple(v) if isinstance(v, list | tuple) else float(v) for k, v in normalization["lattice"].items()}
        )
        self.diffusion = JointDiffusion(self.config.diffusion, lattice).to(self.atom_count_prior.device)
        if "properties" in self.conditions.names:
            self.conditions.set_property_stats(normalization.get("properties", {}))
        histogram = normalization.get("num_atoms_histogram") or {}
        prior = histogram_prior(histogram, self.config.num_atoms.max_atoms) if histogram else torch.zeros(0)
        self.atom_count_prior = prior.to(self.atom_count_prior.device)

    def export_config(self) -> DiffusionModelConfig:
        """The config of a self-contained folder (aligned encoders inlined, see `ConditionEncoder.export_config`)."""
        return replace(self.config, conditions=self.conditions.export_config())

    def condition(self, inputs: ConditionInputs) -> Condition | None:
        """Condition tokens of B samples, or None for an unconditional model."""
        return self.conditions(inputs)

    def losses(
        self,
        batch,
        generator: torch.Generator | None = None,
        denoiser: nn.Module | None = None,
        num_atoms_weight: float = 1.0,
        composition_weight: float = 1.0,
        only_composition: bool = False,
        composition_augment: float = 0.0,
        composition_describe: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Training losses of a `MultimodalBatch` (the one objective of `CrystalDiffusion` and of design-loop
        decoder updates): keys loss, loss_coords, loss_lattice, loss_types, loss_num_atoms.

        cond = condition encoder(batch), each condition dropped with its training probability (CFG);
        t ~ U per crystal; noisy, targets = corrupt(crystal, t); loss = JointDiffusion.loss(denoiser(noisy, t, cond))
        + num_atoms_weight x CE(atom-count head(pooled cond), num_atoms). All noise from `generator` (global RNG
        when None); `denoiser` defaults to `self.denoiser` (the task passes its EMA copy for validation).
        With a composition model, + composition_weight x its per-token cross-entropy of the reduced formulas
        (key loss_composition; formulas outside its vocabulary are left out and counted in composition_skipped).
        `only_composition`: the composition loss alone (key loss = loss_composition), the condition tokens computed
        without gradients and no diffusion forward pass (`CrystalDiffusion(train_only=["composition"])`); with it,
        in training mode, `composition_augment` rewrites that fraction of the captions' formulas and their targets
        (`mmcrystal.diffusion.formula_augmentation`; keys composition_rewritten, composition_rewrite_skipped), and
        first `composition_describe` says that fraction of the captions' formulas in words, targets unchanged
        (`mmcrystal.diffusion.formula_words`; keys composition_described, composition_describe_skipped).
        """
        if self.normalization is None:
            raise RuntimeError("no dataset statistics yet: call setup() with a data module, or set_normalization")
        device = self.atom_count_prior.device
        crystal = batch.crystal.to(device)
        inputs = ConditionInputs.from_batch(
            batch, self.config.conditions.properties, self.conditions.config.num_elements
        )
        if only_composition:
            if self.composition is None:
                raise ValueError("only_composition needs a composition model (composition.enabled: true)")
            extra, copy_only = {}, None
            if (composition_augment > 0 or composition_describe > 0) and self.training and inputs.captions is not None:
                inputs, copy_only, extra = self._augment_captions(inputs, composition_augment, composition_describe,
                                                                  generator)  # fmt: skip
            with torch.no_grad():  # the condition encoder stays as the denoiser knows it
                cond = drop_conditions(self.condition(inputs), self.config.conditions.drop_probs(), generator)
            reduced = reduce_formulas(inputs.composition[:, 1 : self.composition.config.num_elements + 1])
            # rewritten captions teach the pointer and the gate to copy, not the generator which formulas exist
            loss, fits = self.composition.loss(reduced, cond, copy_only)
            skipped = (~fits).sum().to(loss.dtype)
            return {"loss": loss, "loss_composition": loss, "composition_skipped": skipped, **extra}
        cond = drop_conditions(self.condition(inputs), self.config.conditions.drop_probs(), generator)
        t = self.diffusion.sample_time(crystal.num_graphs, generator, device=device)  # (B,)
        noisy, targets = self.diffusion.corrupt(crystal, t, generator)
        losses = self.diffusion.loss((denoiser or self.denoiser)(noisy, t, cond), targets, noisy, t)
        width = self.num_atoms.config.cond_dim
        pooled = cond.pooled() if cond is not None else crystal.lattice.new_zeros(crystal.num_graphs, width)
        losses["loss_num_atoms"] = self.num_atoms.loss(self.num_atoms(pooled), crystal.num_atoms)
        losses["loss"] = losses["loss"] + num_atoms_weight * losses["loss_num_atoms"]
        if self.composition is not None:
            # inputs.composition: (B, num_elements + 1) atom counts in column Z
            reduced = reduce_formulas(inputs.composition[:, 1 : self.composition.config.num_elements + 1])
            losses["loss_composition"], fits = self.composition.loss(reduced, cond)
            losses["composition_skipped"] = (~fits).sum().to(losses["loss"].dtype)
            losses["loss"] = losses["loss"] + composition_weight * losses["loss_composition"]
        return losses

    def _augment_captions(
        self, inputs: ConditionInputs, rewrite: float, describe: float, generator: torch.Generator | None
    ) -> tuple[ConditionInputs, torch.Tensor, dict[str, torch.Tensor]]:
        """Inputs with a `describe` fraction of the captions' formulas said in words, then a `rewrite` fraction of
        the remaining ones rewritten with other counts (targets follow); the `(B,)` bool of rewritten rows (they
        train the copy pointer only); counters. Both kinds of caption are kept out of the text cache."""
        from mmcrystal.diffusion.formula_augmentation import rewrite_formulas
        from mmcrystal.diffusion.formula_words import describe_formulas

        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator else None))
        rng, cfg = random.Random(seed), self.composition.config
        counters, mask = {}, inputs.caption_mask.cpu()
        described = torch.zeros_like(mask)
        if describe > 0:
            words = describe_formulas(inputs.captions, mask, describe, rng, self.conditions.config.num_elements)
            inputs, described = replace(inputs, captions=words.captions), words.described
            counters["composition_described"] = torch.tensor(float(described.sum()))
            counters["composition_describe_skipped"] = torch.tensor(float(words.skipped))  # no formula to say
        rewritten = torch.zeros_like(mask)
        if rewrite > 0:
            out = rewrite_formulas(inputs.captions, mask & ~described, inputs.composition, rewrite, rng,
                                   cfg.max_count, cfg.max_atoms)  # fmt: skip
            inputs, rewritten = replace(inputs, captions=out.captions, composition=out.composition), out.rewritten
            counters["composition_rewritten"] = torch.tensor(float(rewritten.sum()))
            counters["composition_rewrite_skipped"] = torch.tensor(float(out.skipped))
        return replace(inputs, caption_transient=described | rewritten), rewritten, counters


def model_fingerprint(folder: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a pretrained folder's weights (recorded with every sample run)."""
    digest = hashlib.sha256()
    with (Path(folder) / "model.safetensors").open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
