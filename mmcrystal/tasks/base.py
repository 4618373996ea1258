"""What every Lightning task shares: the optimiser recipe and checkpoint loading that unpickles nothing."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch

from mmcrystal.config import register_config
from mmcrystal.schedules import warmup_cosine

__all__ = ["OptimConfig", "build_optimizer", "TaskBase"]


@register_config
@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay.

    Attributes:
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay (not applied to biases, norms, embeddings' scales, temperatures).
        betas: Adam betas.
        warmup_steps: Linear warm-up steps.
        min_lr_ratio: Final learning rate as a fraction of ``lr`` (cosine floor).
        pretrained_lr_scale: Learning-rate multiplier for parameters of pretrained backbones (text models,
            CHGNet), which tolerate only small updates.
    """

    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 500
    min_lr_ratio: float = 0.05
    pretrained_lr_scale: float = 0.1


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or "norm" in name.lower() or "logit" in name


def build_optimizer(module: torch.nn.Module, cfg: OptimConfig, total_steps: int, pretrained_prefixes=()):
    """AdamW param groups (decay / no decay x pretrained / new) and a warm-up + cosine LambdaLR."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        key = (_no_decay(name, param), any(name.startswith(p) for p in pretrained_prefixes))
        groups.setdefault(key, []).append(param)
    param_groups = [
        {
            "params": params,
            "weight_decay": 0.0 if no_decay else cfg.weight_decay,
            "lr": cfg.lr * (cfg.pretrained_lr_scale if pretrained else 1.0),
        }
        for (no_decay, pretrained), params in groups.items()
    ]
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas))
    return warmup_cosine(optimizer, cfg.warmup_steps, cfg.min_lr_ratio, total_steps)


class TaskBase(L.LightningModule):
    """Hyperparameters are stored as plain JSON-like dicts, so checkpoints load with ``weights_only=True``.

    Resuming: Lightning restores weights, optimiser, scheduler and loop counters; submodules (such as the diffusion
    EMA and its update count) are part of the weights. The callbacks of `mmcrystal.train` add each rank's RNG state
    (`mmcrystal.callbacks.RNGStateCheckpoint`) and the loader's data position (`EpochDataLoader.state_dict`).
    """

    # submodules `mmcrystal.callbacks.CompileNetworks` compiles when a run asks for torch.compile
    compile_targets: tuple[str, ...] = ("model",)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs):
        """Load without the run folder and without unpickling arbitrary objects (``weights_only=True``)."""
        kwargs.setdefault("weights_only", True)
        return super().load_from_checkpoint(
            checkpoint_path, map_location=map_location, hparams_file=hparams_file, strict=strict, **kwargs
        )

    def datamodule_manifest(self, needed: str) -> dict:
        """The attached data module's manifest (train-split statistics); a clear error when there is none."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        manifest = getattr(datamodule, "manifest", None)
        if not manifest:
            raise ValueError(
                f"{type(self).__name__} needs {needed}: train with CrystalDataModule(root=<prepared folder>) "
                "or pass manifest_root / normalization"
            )
        return manifest

    def total_steps(self) -> int:
        trainer = self._trainer
        if trainer is None:
            return 1
        try:
            return int(trainer.estimated_stepping_batches)
        except Exception:  # noqa: BLE001 - infinite or unknown epoch lengths
            return max(int(trainer.max_steps or 1), 1)
