"""`PropertyFinetuning`: the Lightning task that fine-tunes a (pretrained) crystal encoder on property tasks.

Thin by design: `PropertyModel` (mmcrystal/finetune/model.py) holds encoders, fusion and head; `property_loss` the
masked multi-task loss; `build_finetune_optimizer` freezing-aware parameter groups with layer-wise learning-rate
decay; `task_metrics` the validation metrics. A step:

    outputs = model(batch)                                  (B, O) normalised values / logits
    loss    = mean over tasks with a known value of  w_t * masked loss_t(outputs, (y - mean_t) / std_t)

    mmcrystal finetune fit -c configs/finetune/mp20_formation_energy.yaml
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmcrystal.config import config_from_dict, config_to_dict
from mmcrystal.data.batch import MultimodalBatch
from mmcrystal.finetune.backbone import property_model_config, resolve_backbone
from mmcrystal.finetune.config import BackboneConfig, HeadConfig, TargetConfig, TuningConfig, parse_target
from mmcrystal.finetune.heads import normalization_from_manifest, property_loss
from mmcrystal.finetune.metrics import task_metrics
from mmcrystal.finetune.model import PropertyModel, batch_targets
from mmcrystal.finetune.tuning import build_finetune_optimizer
from mmcrystal.pretrained import save_pretrained
from mmcrystal.tasks.base import OptimConfig, TaskBase

__all__ = ["PropertyFinetuning"]


def _as_config(value, cls):
    if value is None:
        return cls()
    return config_from_dict(value) if isinstance(value, dict) else value


def _targets(value) -> list[TargetConfig]:
    if not value:
        raise ValueError("PropertyFinetuning needs targets, e.g. targets: [{name: band_gap}]")
    return [parse_target(config_from_dict(t) if isinstance(t, dict) else t) for t in value]


class PropertyFinetuning(TaskBase):
    """A pretrained (or CHGNet, or from-scratch) encoder + MLP head on one or several property tasks.

    Args:
        backbone: Where the encoder comes from (alignment export folder or checkpoint, ``chgnet``, ``scratch``)
            and which extra inputs (captions, XRD) are fused in.
        targets: The tasks (property column, regression/binary/multiclass, loss, weight).
        head: The MLP head on the pooled embedding.
        tuning: Frozen / partial / full / LoRA, layer-wise learning-rate decay.
        optim: Optimiser and warm-up + cosine schedule (``lr`` is the head's).
        manifest_root: Prepared dataset whose train-split statistics normalise the targets; default: the data
            module's manifest at setup.
        normalization: ``{name: {"mean", "std"}}`` of the regression targets; filled in at setup and stored in
            checkpoints. Leave unset when training.
        network: The resolved architecture (`PropertyModelConfig` as a dict); filled in from ``backbone`` and
            stored in checkpoints, so reloading never reads the backbone source again. Leave unset when training.
    """

    def __init__(
        self,
        backbone: BackboneConfig | None = None,
        targets: list[TargetConfig] | None = None,
        head: HeadConfig | None = None,
        tuning: TuningConfig | None = None,
        optim: OptimConfig | None = None,
        manifest_root: str | None = None,
        normalization: dict | None = None,
        network: dict | None = None,
    ):
        super().__init__()
        backbone_cfg = _as_config(backbone, BackboneConfig)
        self.optim_cfg = _as_config(optim, OptimConfig)
        if network is not None:  # a checkpoint: the architecture is known, the weights come from its state dict
            self.model = PropertyModel(network)
        else:
            tuning_cfg = _as_config(tuning, TuningConfig)
            resolved = resolve_backbone(backbone_cfg, tuning_cfg.mode)
            config = property_model_config(resolved, _targets(targets), _as_config(head, HeadConfig), tuning_cfg)
            self.model = PropertyModel(config, resolved.state)
        if normalization is None and manifest_root is not None:
            from mmcrystal.data.datamodule import load_manifest

            normalization = normalization_from_manifest(load_manifest(manifest_root), self.model.targets)
        if normalization is not None:
            self.model.set_normalization(normalization)
        cfg = self.model.config
        # plain dicts only: the checkpoint then loads with weights_only=True (no pickled classes)
        self.save_hyperparameters(
            {
                "backbone": config_to_dict(backbone_cfg),
                "targets": config_to_dict(list(cfg.targets)),
                "head": config_to_dict(cfg.head),
                "tuning": config_to_dict(cfg.tuning),
                "optim": config_to_dict(self.optim_cfg),
                "manifest_root": manifest_root,
                "normalization": normalization,
                "network": config_to_dict(cfg),
            }
        )
        self._val_outputs: list[dict] = []

    # ------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Take the targets' train-split statistics from the data module's manifest (once; then from hparams)."""
        if self.hparams["normalization"] is not None:
            return
        manifest = self.datamodule_manifest("the targets' statistics")
        normalization = normalization_from_manifest(manifest, self.model.targets)
        self.model.set_normalization(normalization)
        self.hparams["normalization"] = normalization
        self.hparams["network"] = config_to_dict(self.model.config)

    # ------------------------------------------------------------------------------------------- steps
    def compute_loss(self, batch: MultimodalBatch) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """Total loss, ``{task: (loss, count)}`` and the (B, O) outputs of one batch. Logs nothing."""
        values, mask = batch_targets(batch, self.model.target_names)
        outputs = self.model.forward_batch(batch)
        loss, parts = property_loss(outputs, values.to(self.device), mask.to(self.device), self.model.targets,
                                    self.model.target_mean, self.model.target_std)  # fmt: skip
        return loss, parts, outputs

    def _log_losses(self, split: str, loss: torch.Tensor, parts: dict, batch_size: int) -> None:
        sync = split != "train"
        for key, (value, count) in parts.items():
            self.log(f"{split}/loss_{key}", value, batch_size=count, sync_dist=sync)
        self.log(f"{split}/loss", loss, batch_size=batch_size, prog_bar=True, sync_dist=sync)

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> torch.Tensor:
        loss, parts, _ = self.compute_loss(batch)
        self._log_losses("train", loss, parts, len(batch))
        return loss

    def validation_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: MultimodalBatch, split: str) -> None:
        loss, parts, outputs = self.compute_loss(batch)
        self._log_losses(split, loss, parts, len(batch))
        keep = ~batch.is_padding.to(torch.bool)
        values, mask = batch_targets(batch, self.model.target_names)
        preds = [p.detach().float().cpu()[keep] for p in self.model.predictions(outputs)]
        self._val_outputs.append({"preds": preds, "values": values[keep], "mask": mask[keep]})

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _eval_epoch_end(self, split: str) -> None:
        """MAE/RMSE, ROC-AUC/accuracy per task over the whole split (this rank's samples)."""
        if not self._val_outputs:
            return
        outputs, self._val_outputs = self._val_outputs, []
        preds = [torch.cat([o["preds"][t] for o in outputs]).numpy() for t in range(len(self.model.targets))]
        values = torch.cat([o["values"] for o in outputs]).numpy()
        mask = torch.cat([o["mask"] for o in outputs]).numpy()
        for name, value in task_metrics(self.model.targets, preds, values, mask).items():
            if not name.startswith("count/") and np.isfinite(value):
                self.log(f"{split}/{name}", float(value))

    def configure_optimizers(self):
        return build_finetune_optimizer(self.model, self.optim_cfg, self.model.config.tuning, self.total_steps())

    # ------------------------------------------------------------------------------------------- export
    def save_pretrained(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write the fine-tuned model (architecture, head, targets, normalisation, weights) as safetensors + JSON;
        `PropertyPredictor.from_pretrained(folder)` loads it with no reference to the backbone source."""
        if self.hparams["normalization"] is None:
            raise RuntimeError("no target statistics yet: nothing trained to export")
        return save_pretrained(self.model, self.model.config, folder, "PropertyModel", extra)
