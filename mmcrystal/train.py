"""Lightning stages of the console script: ``mmcrystal align fit -c configs/align/crystal_text.yaml ...``.

LightningCLI builds the parser from the task's and data module's typed signatures, so every recipe in
``configs/`` is a flat YAML of those arguments; any value can be overridden on the command line
(``--data.batch_size 128``, ``--model.network.latent_dim 512``, ``--trainer.max_steps 1000``). ``--run.*``
(`RunOptions`) sets checkpointing, preemption, loggers and torch.compile; `build_callbacks` wires:

- ``<root>/checkpoints/best-*.ckpt`` (lowest ``val/loss``) and ``<root>/checkpoints/last.ckpt``, written every
  ``run.checkpoint_every_n_steps`` optimiser steps, at the end, and on SIGTERM / SLURM's requeue signal
  (`mmcrystal.callbacks.PreemptionCheckpoint`); ``--ckpt_path last`` resumes from the newest ``last*.ckpt``,
- every rank's RNG state in each checkpoint and the loader's data position (exact resume),
- throughput, data-wait fraction and GPU memory (``perf/*``), the learning rate, and the ``pretrained`` export.

``<root>`` is ``--trainer.default_root_dir`` (default: the working directory); logs go to
``<root>/lightning_logs/version_N`` (CSV by default; ``--run.loggers+ tensorboard``, ``--run.loggers+ wandb``).
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from mmcrystal.callbacks import (
    CompileNetworks,
    PreemptionCheckpoint,
    RNGStateCheckpoint,
    StepCheckpoint,
    ThroughputMonitor,
)
from mmcrystal.data.datamodule import CrystalDataModule

__all__ = ["STAGES", "ExportPretrained", "RunOptions", "build_callbacks", "build_loggers", "run_stage"]

# Our IterableDataset's __len__ is exact per rank and worker (mmcrystal/data/loader.py), so this warning is noise.
warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
# `mmcrystal <stage> ...` hands LightningCLI its own argv while sys.argv holds the console script's: intended here
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")

# stage word -> task class
STAGES = {
    "align": "mmcrystal.tasks.alignment:AlignmentPretraining",
    "diffuse": "mmcrystal.tasks.diffusion:CrystalDiffusion",
    "finetune": "mmcrystal.tasks.finetune:PropertyFinetuning",
}


@dataclass
class RunOptions:
    """Checkpointing, preemption, logging and compilation of a training run (``--run.*``).

    Attributes:
        checkpoint_dir: Folder of ``last.ckpt`` and ``best-*.ckpt``; default ``<default_root_dir>/checkpoints``
            (fixed, not per logger version, so a requeued job finds its checkpoints).
        checkpoint_every_n_steps: Write ``last.ckpt`` every this many optimiser steps (0: only at the end and on
            preemption).
        monitor: Metric of the best checkpoint (lower is better); empty string for none.
        preemption_signals: Signals that save ``last.ckpt`` at the next step and stop (SLURM's requeue signal also
            requeues the job when Lightning's SLURMEnvironment has auto_requeue on, its default).
        distinct_rank_seeds: Each DDP rank draws its own noise (seeds derived from rank 0's).
        loggers: Used when ``--trainer.logger`` is left at its default: any of ``csv``, ``tensorboard``, ``wandb``
            (wandb runs offline when WANDB_MODE=offline or no API key is configured).
        wandb_project: Project name for the wandb logger.
        compile: torch.compile the task's ``compile_targets`` (`mmcrystal.callbacks.CompileNetworks`).
        throughput_window: Batches averaged in the logged ``perf/*`` values.
    """

    checkpoint_dir: str | None = None
    checkpoint_every_n_steps: int = 1000
    monitor: str = "val/loss"
    preemption_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    distinct_rank_seeds: bool = True
    loggers: list[str] = field(default_factory=lambda: ["csv"])
    wandb_project: str = "mmcrystal"
    compile: bool = False
    throughput_window: int = 50


class ExportPretrained(L.Callback):
    """After fitting, write ``<log_dir>/pretrained`` (safetensors + JSON) from the best checkpoint if there is
    one, else from the final weights: the folder loads with ``from_pretrained`` and no run folder."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask, not only rank 0
        if not trainer.is_global_zero or not hasattr(pl_module, "save_pretrained"):
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        module = type(pl_module).load_from_checkpoint(best, map_location="cpu") if best else pl_module
        out = Path(log_dir or trainer.default_root_dir) / "pretrained"
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        module.save_pretrained(out, extra={"checkpoint": best, "metrics": metrics})
        print(f"exported {out}")


def build_callbacks(root_dir: str, options: RunOptions, checkpointing: bool = True, logging: bool = True) -> list:
    """The callbacks of a ``fit`` run (see the module docstring); `checkpointing`/`logging` follow the Trainer's
    ``enable_checkpointing`` and ``logger``. The best-checkpoint callback comes first, so it is
    ``trainer.checkpoint_callback``."""
    ckpt_dir = options.checkpoint_dir or os.path.join(root_dir, "checkpoints")
    callbacks: list[L.Callback] = []
    if checkpointing:
        if options.monitor:
            callbacks.append(
                ModelCheckpoint(dirpath=ckpt_dir, monitor=options.monitor, mode="min", filename="best-{epoch}-{step}")
            )
        callbacks.append(StepCheckpoint(ckpt_dir, options.checkpoint_every_n_steps))
        callbacks.append(PreemptionCheckpoint(ckpt_dir, tuple(options.preemption_signals)))
    callbacks.append(RNGStateCheckpoint(options.distinct_rank_seeds))
    callbacks.append(ThroughputMonitor(window=options.throughput_window))
    if logging:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    callbacks.append(ExportPretrained())
    if options.compile:
        callbacks.append(CompileNetworks())
    return callbacks


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_loggers(root_dir: str, options: RunOptions) -> list:
    """Loggers named in ``options.loggers``, all writing under ``<root_dir>/lightning_logs/version_N``."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    unknown = set(options.loggers) - {"csv", "tensorboard", "wandb"}
    if unknown:
        raise ValueError(f"run.loggers: unknown logger(s) {sorted(unknown)}; choose from csv, tensorboard, wandb")
    csv = CSVLogger(root_dir, name="lightning_logs")
    version = csv.version  # one version folder for every logger of the run
    loggers: list = [csv] if "csv" in options.loggers else []
    if "tensorboard" in options.loggers:
        loggers.append(TensorBoardLogger(root_dir, name="lightning_logs", version=version))
    if "wandb" in options.loggers:
        from lightning.pytorch.loggers import WandbLogger

        offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not _wandb_has_key()
        loggers.append(WandbLogger(project=options.wandb_project, save_dir=root_dir, offline=offline))
    return loggers


class MMCrystalCLI(LightningCLI):
    """LightningCLI with `RunOptions` (``--run.*``) and the callbacks and loggers they configure."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_class_arguments(RunOptions, "run")

    def _section(self, key: str):
        return self.config.get(str(self.subcommand), self.config).get(key)

    def before_instantiate_classes(self) -> None:
        trainer = self._section("trainer")
        root = trainer.get("default_root_dir") or os.getcwd()
        options = RunOptions(**self._section("run").as_dict())
        self.run_options, self.root_dir = options, root
        checkpointing = trainer.get("enable_checkpointing") is not False
        logger = trainer.get("logger")
        logging = logger is not False and (logger not in (None, True) or bool(options.loggers))
        self.trainer_defaults["callbacks"] = build_callbacks(root, options, checkpointing, logging)

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        if self._get(self.config_init, "trainer", default={}).get("logger") in (None, True):  # left at its default
            kwargs.setdefault("logger", build_loggers(self.root_dir, self.run_options) or False)
        return super().instantiate_trainer(**kwargs)


def _task_class(stage: str):
    module_name, _, attr = STAGES[stage].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def run_stage(stage: str, argv: list[str], run: bool = True) -> LightningCLI:
    """Run (or, with ``run=False``, only build) the LightningCLI of a stage."""
    return MMCrystalCLI(
        _task_class(stage),
        CrystalDataModule,
        args=argv,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": f"mmcrystal {stage}"} if run else {"prog": f"mmcrystal {stage}", "exit_on_error": False},
    )
