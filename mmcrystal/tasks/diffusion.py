"""`CrystalDiffusion`: the Lightning task that trains the conditional crystal diffusion decoder.

Thin by design: `CrystalDiffusionModel` (mmcrystal/generate.py) holds the condition encoder, denoiser and atom-count
head; `JointDiffusion` corrupts and scores; `drop_conditions` does the classifier-free-guidance dropout. A step:

    cond = condition encoder(batch) -> drop each condition with its probability
    t ~ U[t_min, 1] per crystal; noisy, targets = corrupt(crystal, t)
    loss = JointDiffusion.loss(denoiser(noisy, t, cond)) + w * CE(atom-count head(pooled cond), num_atoms)
           [+ w_c * CE(composition model(reduced formula | cond)) when the composition-first model is enabled]

There is no sampling loop here (`CrystalSampler` is the only one). The denoiser's exponential moving average is
updated after every optimiser step (`optimizer_step`, so once per step under gradient accumulation), validated,
saved in checkpoints (it is a submodule; its update count is a buffer) and exported by `save_pretrained`. With
`mmcrystal.callbacks.RNGStateCheckpoint` a resumed run draws the same noise as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from mmcrystal.config import config_from_dict, config_to_dict
from mmcrystal.data.batch import CrystalBatch, MultimodalBatch
from mmcrystal.diffusion import DenoiserConfig, DiffusionConfig, NumAtomsConfig
from mmcrystal.diffusion.composition_model import CompositionModelConfig
from mmcrystal.diffusion.conditioning import ConditionConfig
from mmcrystal.diffusion.ema import EMA
from mmcrystal.generate import CrystalDiffusionModel, DiffusionModelConfig, normalization_from_manifest
from mmcrystal.pretrained import save_pretrained
from mmcrystal.tasks.base import OptimConfig, TaskBase, build_optimizer

__all__ = ["CrystalDiffusion"]

LOSS_KEYS = ("loss", "loss_coords", "loss_lattice", "loss_types", "loss_num_atoms")


def _as_config(value, cls):
    if value is None:
        return cls()
    return config_from_dict(value) if isinstance(value, dict) else value


_PARTS = ("composition", "conditions", "denoiser", "num_atoms")


def _parts(value: list[str] | None, name: str) -> list[str] | None:
    """A checked list of decoder parts (`_PARTS`), or None."""
    if value is None:
        return None
    parts = [str(v) for v in ([value] if isinstance(value, str) else value)]
    unknown = sorted(set(parts) - set(_PARTS))
    if unknown:
        raise ValueError(f"{name}: unknown decoder parts {unknown}; choose from {list(_PARTS)}")
    return parts


def _without_padding(batch: MultimodalBatch) -> MultimodalBatch:
    """Drop the samples repeated only to even out DDP ranks (`is_padding`), so each sample counts once."""
    keep = ~batch.is_padding.to(torch.bool)
    if bool(keep.all()):
        return batch
    crystal, rows = batch.crystal, keep.nonzero()[:, 0]
    atom_keep = keep.to(crystal.batch.device)[crystal.batch]
    num_atoms = crystal.num_atoms[keep]
    index = torch.repeat_interleave(torch.arange(len(num_atoms), device=num_atoms.device), num_atoms)
    changes = {"crystal": CrystalBatch(crystal.atomic_numbers[atom_keep], crystal.frac_coords[atom_keep],
                                       crystal.lattice[keep], num_atoms, index)}  # fmt: skip
    for f in fields(batch):
        value = getattr(batch, f.name)
        if f.name in ("ids", "captions"):
            changes[f.name] = [value[i] for i in rows.tolist()]
        elif isinstance(value, torch.Tensor):
            changes[f.name] = value[keep.to(value.device)]
    return replace(batch, **changes)


class CrystalDiffusion(TaskBase):
    """Joint lattice / coordinate / atom-type diffusion conditioned on text, properties, XRD or composition.

    Args:
        denoiser: The network (`cond_dim` and `num_classes` follow `conditions` and `diffusion`).
        diffusion: The corruption processes and loss weights (`types.fixed_composition=True` for CSP).
        conditions: Which conditions, their encoders and classifier-free-guidance drop probabilities.
        num_atoms: The atom-count head on the pooled condition (`cond_dim` follows `conditions`).
        optim: Optimiser and schedule.
        ema_decay: Decay of the denoiser's exponential moving average (validated and exported).
        num_atoms_weight: Weight of the atom-count cross-entropy in the total loss.
        composition: The composition-first model p(reduced formula | condition) (`enabled: true` to train it; the
            sampler's `composition_first` then draws formulas from it).
        composition_weight: Weight of its per-token cross-entropy in the total loss.
        manifest_root: Prepared dataset whose statistics to use; default: the data module's manifest at setup.
        normalization: Dataset statistics as plain JSON (`normalization_from_manifest`); filled in at setup and
            stored in checkpoints, so a checkpoint needs no dataset. Leave unset when training.
        val_seed: Base seed of the validation noise (batch i uses val_seed + i), so validation losses compare.
        init_from: Decoder folder (`save_pretrained`) or `CrystalDiffusion` checkpoint whose weights start this run
            (`mmcrystal.tasks.warm_start`: same-named tensors copied, grown tables copied on their overlap, new
            heads fresh; the EMA starts from the result). Applied once, when `fit` starts at step 0: a resumed run
            takes its checkpoint's weights, and loading a checkpoint never reads this path (kept as provenance).
        init_exclude: Parts of the decoder (`composition`, `num_atoms`, `conditions`, `denoiser`) that `init_from`
            leaves fresh, e.g. `[composition]` to retrain the composition model from scratch on other data.
        train_only: Train only these parts, the rest frozen; `[composition]` trains the composition model alone on
            the frozen condition tokens (no diffusion forward pass: several times cheaper per step), so the exported
            decoder's denoiser and condition encoder are exactly those of `init_from`. None: train everything.
        composition_augment: With `train_only: [composition]`, the fraction of training captions whose formula is
            rewritten with other counts, the rewritten formula being the target
            (`mmcrystal.diffusion.formula_augmentation`: teaches copying counts and lengths the crystals lack).
        composition_describe: With `train_only: [composition]`, the fraction of training captions whose formula is
            said in words instead ("lithium iron phosphate", "sulfide"; `mmcrystal.diffusion.formula_words`), the
            crystal's formula staying the target: teaches the formulas that prompts naming none ask for.
    """

    compile_targets = ("model.denoiser",)  # the network that runs every step (CompileNetworks)

    def __init__(
        self,
        denoiser: DenoiserConfig | None = None,
        diffusion: DiffusionConfig | None = None,
        conditions: ConditionConfig | None = None,
        num_atoms: NumAtomsConfig | None = None,
        optim: OptimConfig | None = None,
        ema_decay: float = 0.999,
        num_atoms_weight: float = 1.0,
        composition: CompositionModelConfig | None = None,
        composition_weight: float = 1.0,
        manifest_root: str | None = None,
        normalization: dict | None = None,
        val_seed: int = 0,
        init_from: str | None = None,
        init_exclude: list[str] | None = None,
        train_only: list[str] | None = None,
        composition_augment: float = 0.0,
        composition_describe: float = 0.0,
    ):
        super().__init__()
        self.optim_cfg = _as_config(optim, OptimConfig)
        if normalization is None and manifest_root is not None:
            from mmcrystal.data.datamodule import load_manifest

            normalization = normalization_from_manifest(load_manifest(manifest_root))
        model_cfg = DiffusionModelConfig(
            denoiser=_as_config(denoiser, DenoiserConfig),
            diffusion=_as_config(diffusion, DiffusionConfig),
            conditions=_as_config(conditions, ConditionConfig),
            num_atoms=_as_config(num_atoms, NumAtomsConfig),
            composition=_as_config(composition, CompositionModelConfig),
            normalization=normalization,
        )
        self.model = CrystalDiffusionModel(model_cfg)
        cfg = self.model.config  # synchronised widths
        # plain dicts only: the checkpoint then loads with weights_only=True (no pickled classes)
        self.save_hyperparameters(
            {
                "denoiser": config_to_dict(cfg.denoiser),
                "diffusion": config_to_dict(cfg.diffusion),
                "conditions": config_to_dict(cfg.conditions),
                "num_atoms": config_to_dict(cfg.num_atoms),
                "optim": config_to_dict(self.optim_cfg),
                "ema_decay": float(ema_decay),
                "num_atoms_weight": float(num_atoms_weight),
                "composition": config_to_dict(cfg.composition),
                "composition_weight": float(composition_weight),
                "manifest_root": manifest_root,
                "normalization": normalization,
                "val_seed": int(val_seed),
                "init_from": None if init_from is None else str(init_from),
                "init_exclude": _parts(init_exclude, "init_exclude"),
                "train_only": _parts(train_only, "train_only"),
                "composition_augment": float(composition_augment),
                "composition_describe": float(composition_describe),
            }
        )
        for name, rate in (
            ("composition_augment", composition_augment),
            ("composition_describe", composition_describe),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {rate}")
        if composition_describe > 0 and self.hparams["train_only"] != ["composition"]:
            raise ValueError("composition_describe applies where the composition model trains alone: "
                             "it needs train_only: [composition]")  # fmt: skip
        if composition_augment > 0 and self.hparams["train_only"] != ["composition"]:
            raise ValueError("composition_augment rewrites captions the denoiser must not see: it needs "
                             "train_only: [composition]")  # fmt: skip
        if composition_augment > 0 and not self.model.config.composition.copy:
            raise ValueError("composition_augment trains the copy pointer: it needs composition.copy: true")
        only = self.hparams["train_only"]
        if only is not None:
            if only != ["composition"]:
                raise ValueError(f"train_only={only}: supported is [composition] (or None: train everything)")
            if self.model.composition is None:
                raise ValueError("train_only=[composition] needs composition.enabled: true")
            for name, param in self.model.named_parameters():
                param.requires_grad_(name.startswith("composition."))
        self.ema = EMA(self.model.denoiser, ema_decay)
        self.drop_probs = cfg.conditions.drop_probs()

    # ------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Take the dataset statistics from the data module's manifest (once; then they live in hparams)."""
        strategy = type(getattr(self._trainer, "strategy", None)).__name__
        if strategy in ("FSDPStrategy", "ModelParallelStrategy", "DeepSpeedStrategy"):
            raise ValueError(
                f"CrystalDiffusion keeps an unsharded EMA copy of the denoiser, which {strategy} would shard: "
                "train the decoder with ddp (configs/trainer/ddp.yaml or multinode.yaml)"
            )
        if self.hparams["normalization"] is not None:
            return
        manifest = self.datamodule_manifest("dataset statistics (lattice, properties)")
        self.set_normalization(normalization_from_manifest(manifest))

    def on_fit_start(self) -> None:
        """Warm start from `init_from` (class docstring) before the first step; a resumed run (step > 0) keeps its
        checkpoint's weights."""
        source = self.hparams.get("init_from")
        if source is None or self.global_step > 0:
            return
        from mmcrystal.tasks.warm_start import copy_matching, decoder_state

        skip = tuple(f"{part}." for part in self.hparams.get("init_exclude") or ())
        state = {k: v for k, v in decoder_state(source).items() if not (skip and k.startswith(skip))}
        report = copy_matching(self.model, state)
        if not report.copied:
            raise ValueError(f"init_from {source}: no tensor matches this decoder by name and shape")
        self.ema.module.load_state_dict(self.model.denoiser.state_dict())
        rank_zero_info(f"init_from {source}: {report.summary()}")  # Lightning's logger: shown by `diffuse fit`

    def set_normalization(self, normalization: dict) -> None:
        """Adopt dataset statistics and record them in the hyperparameters (and so in every checkpoint)."""
        self.hparams["normalization"] = normalization
        self.model.set_normalization(normalization)

    # ------------------------------------------------------------------------------------------- losses
    def compute_losses(
        self, batch: MultimodalBatch, generator: torch.Generator | None = None, use_ema: bool = False
    ) -> dict[str, torch.Tensor]:
        """The losses of one batch (keys `LOSS_KEYS`); all noise from `generator` (global RNG when None)."""
        denoiser = self.ema.module if use_ema else self.model.denoiser
        only = self.hparams.get("train_only") == ["composition"]
        return self.model.losses(batch, generator, denoiser, self.hparams["num_atoms_weight"],
                                 self.hparams.get("composition_weight", 1.0), only_composition=only,
                                 composition_augment=self.hparams.get("composition_augment", 0.0),
                                 composition_describe=self.hparams.get("composition_describe", 0.0))  # fmt: skip

    def _log_losses(self, losses: dict[str, torch.Tensor], split: str, batch_size: int) -> None:
        for key in [k for k in LOSS_KEYS + ("loss_composition",) if k in losses]:
            self.log(f"{split}/{key}", losses[key], batch_size=batch_size, prog_bar=key == "loss",
                     sync_dist=split != "train")  # fmt: skip
        # formulas outside the composition model's vocabulary, rewritten and described captions, per epoch
        for key in (
            "composition_skipped",
            "composition_rewritten",
            "composition_rewrite_skipped",
            "composition_described",
            "composition_describe_skipped",
        ):
            if key in losses:
                self.log(f"{split}/{key}", losses[key], reduce_fx="sum", on_step=False, on_epoch=True,
                         batch_size=batch_size, sync_dist=split != "train")  # fmt: skip

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch)
        self._log_losses(losses, "train", len(batch))
        return losses["loss"]

    def optimizer_step(self, *args, **kwargs) -> None:
        # exactly once per optimiser step, whatever the gradient accumulation, and the same after a resume
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.model.denoiser)

    def validation_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _eval_step(self, batch: MultimodalBatch, batch_idx: int, split: str) -> None:
        """The training losses of the EMA denoiser, with fixed noise and fixed condition dropout per batch."""
        batch = _without_padding(batch)
        if len(batch) == 0:
            return
        generator = torch.Generator(device=self.device).manual_seed(self.hparams["val_seed"] + batch_idx)
        self._log_losses(self.compute_losses(batch, generator, use_ema=True), split, len(batch))

    def configure_optimizers(self):
        return build_optimizer(self.model, self.optim_cfg, self.total_steps())

    # ------------------------------------------------------------------------------------------- export
    def save_pretrained(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write the decoder with the EMA denoiser weights, the condition encoder, the atom-count head, the
        configs and the dataset statistics; `CrystalGenerator.from_pretrained(folder)` loads it."""
        if self.model.normalization is None:
            raise RuntimeError("no dataset statistics yet: nothing trained to export")
        online = self.model.denoiser
        self.model.denoiser = self.ema.module
        try:
            config = self.model.export_config()
            return save_pretrained(self.model, config, folder, "CrystalDiffusionModel", extra)
        finally:
            self.model.denoiser = online
