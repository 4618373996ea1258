"""Lightning stages of the console script: ``mmcrystal align fit -c configs/align/crystal_text.yaml ...``.

LightningCLI builds the parser from the task's and data module's typed signatures, so every recipe in
``configs/`` is a flat YAML of those arguments; any value can be overridden on the command line
(``--data.batch_size 128``, ``--model.network.latent_dim 512``, ``--trainer.max_steps 1000``).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from mmcrystal.data.datamodule import CrystalDataModule

__all__ = ["STAGES", "ExportPretrained", "run_stage"]

# Our IterableDataset's __len__ is exact per rank and worker (mmcrystal/data/loader.py), so this warning is noise.
warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
# `mmcrystal <stage> ...` hands LightningCLI its own argv while sys.argv holds the console script's: intended here
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")

# stage word -> task class
STAGES = {
    "align": "mmcrystal.tasks.alignment:AlignmentPretraining",
    "diffuse": "mmcrystal.tasks.diffusion:CrystalDiffusion",
}


class ExportPretrained(L.Callback):
    """After fitting, write ``<log_dir>/pretrained`` (safetensors + JSON) from the best checkpoint if there is
    one, else from the final weights: the folder loads with ``from_pretrained`` and no run folder."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not hasattr(pl_module, "save_pretrained"):
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        module = type(pl_module).load_from_checkpoint(best, map_location="cpu") if best else pl_module
        out = Path(trainer.log_dir or trainer.default_root_dir) / "pretrained"
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        module.save_pretrained(out, extra={"checkpoint": best, "metrics": metrics})
        print(f"exported {out}")


def _task_class(stage: str):
    module_name, _, attr = STAGES[stage].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def run_stage(stage: str, argv: list[str], run: bool = True) -> LightningCLI:
    """Run (or, with ``run=False``, only build) the LightningCLI of a stage."""
    callbacks = [
        ModelCheckpoint(monitor="val/loss", mode="min", save_last=True, filename="{epoch}-{step}"),
        LearningRateMonitor(logging_interval="step"),
        ExportPretrained(),
    ]
    return LightningCLI(
        _task_class(stage),
        CrystalDataModule,
        args=argv,
        run=run,
        trainer_defaults={"callbacks": callbacks},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": f"mmcrystal {stage}"} if run else {"prog": f"mmcrystal {stage}", "exit_on_error": False},
    )
