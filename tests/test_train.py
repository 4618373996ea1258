"""Training at scale, the wiring (one CPU process): SLURM requeue on its signal, RNG state round trip, gradient
accumulation + clipping + bf16-mixed with one EMA update per optimiser step, throughput logging, the CLI
(``--run.*``, loggers, ``--ckpt_path last``), wandb offline and every trainer preset. Kill-and-resume exactness:
tests/distributed/test_resume.py (one process) and test_ddp_resume.py (2 processes)."""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "distributed"))
from ddp_setups import SignalAtStep, build_task, datamodule, fit, prepare_uneven, trainer  # noqa: E402

from mmcrystal.callbacks import (  # noqa: E402
    CompileNetworks,
    PreemptionCheckpoint,
    RNGStateCheckpoint,
    ThroughputMonitor,
    TrainingPreempted,
    capture_rng_state,
    restore_rng_state,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, shared_data):
    return prepare_uneven(tmp_path_factory.mktemp("train_data"), shared_data)


def test_requeue_signal_saves_and_requeues_the_slurm_job(tmp_path, data_root, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "requeued"}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    ckpt = tmp_path / "ckpt"
    callbacks = [SignalAtStep(2, signal.SIGUSR1), PreemptionCheckpoint(ckpt, requeue=True), RNGStateCheckpoint()]
    with pytest.raises(TrainingPreempted) as info:
        fit(build_task("align", data_root), data_root, tmp_path, 8, callbacks)
    assert info.value.code == 128 + signal.SIGUSR1
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    assert torch.load(ckpt / "last.ckpt", weights_only=True)["global_step"] == 2


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = capture_rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(())))
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == first


def test_accumulation_clipping_bf16_and_throughput_logging(tmp_path, data_root):
    task = build_task("diffuse", data_root)
    monitor = ThroughputMonitor(window=4, warmup_batches=2)
    run = trainer(tmp_path, 3, [monitor], precision="bf16-mixed", accumulate_grad_batches=2, gradient_clip_val=0.5,
                  logger=L.pytorch.loggers.CSVLogger(tmp_path))  # fmt: skip
    run.fit(task, datamodule=datamodule(data_root))
    assert run.global_step == 3 and int(task.ema.num_updates) == 3  # one EMA update per optimiser step
    assert torch.isfinite(run.callback_metrics["train/loss"])
    for key in ("perf/samples_per_sec", "perf/data_wait_fraction", "perf/step_ms"):
        assert key in run.callback_metrics, key
    assert 0.0 <= float(run.callback_metrics["perf/data_wait_fraction"]) < 1.0
    summary = monitor.summary()
    assert summary["batches"] == 6 - 2 and summary["samples"] == 4 * 4  # micro-batches of 4 crystals after warm-up
    assert summary["samples_per_sec"] == pytest.approx(summary["samples"] / summary["seconds"])
    header = next((tmp_path / "lightning_logs").rglob("metrics.csv")).read_text().splitlines()[0]
    assert "perf/samples_per_sec" in header


# ------------------------------------------------------------------------------------------- CLI wiring
def test_cli_fit_writes_checkpoints_logs_and_resumes_with_ckpt_path_last(tmp_path, data_root):
    from mmcrystal.train import run_stage

    args = ["-c", str(CONFIGS / "tiny" / "align.yaml"), "--data.root", str(data_root), "--data.batch_size", "4",
            "--trainer.default_root_dir", str(tmp_path), "--run.checkpoint_every_n_steps", "2",
            "--run.loggers+", "tensorboard", "--trainer.val_check_interval", "2"]  # fmt: skip
    run_stage("align", ["fit", *args])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    version = tmp_path / "lightning_logs" / "version_0"
    assert (version / "metrics.csv").is_file() and list(version.glob("events.out.tfevents*"))
    assert "perf/data_wait_fraction" in (version / "metrics.csv").read_text().splitlines()[0]

    cli = run_stage("align", ["fit", *args, "--trainer.max_steps", "6", "--ckpt_path", "last"])
    assert cli.trainer.global_step == 6
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_cli_options_shape_the_callbacks(tmp_path):
    from mmcrystal.callbacks import CompileNetworks, StepCheckpoint
    from mmcrystal.train import run_stage

    cli = run_stage("diffuse", ["-c", str(CONFIGS / "tiny" / "diffusion.yaml"), "--data.root", str(tmp_path),
                                "--trainer.default_root_dir", str(tmp_path), "--run.compile", "true",
                                "--run.checkpoint_every_n_steps", "7", "--run.preemption_signals", "[SIGTERM]"],
                    run=False)  # fmt: skip
    kinds = {type(c): c for c in cli.trainer.callbacks}
    assert CompileNetworks in kinds and ThroughputMonitor in kinds and RNGStateCheckpoint in kinds
    assert kinds[StepCheckpoint]._every_n_train_steps == 7
    assert kinds[PreemptionCheckpoint].signals == [signal.SIGTERM]
    assert cli.trainer.checkpoint_callback.monitor == "val/loss"
    assert Path(kinds[StepCheckpoint].dirpath) == tmp_path / "checkpoints"


def test_wandb_logger_runs_offline_without_a_key(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from mmcrystal.train import RunOptions, build_loggers

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    loggers = build_loggers(str(tmp_path), RunOptions(loggers=["csv", "wandb"]))
    assert [type(x).__name__ for x in loggers] == ["CSVLogger", "WandbLogger"]
    assert loggers[1]._offline
    with pytest.raises(ValueError, match="unknown logger"):
        build_loggers(str(tmp_path), RunOptions(loggers=["mlflow"]))


@pytest.mark.parametrize("preset", sorted((CONFIGS / "trainer").glob("*.yaml")), ids=lambda p: p.name)
def test_trainer_presets_build(preset, tmp_path):
    """Every preset combines with a recipe through the CLI. Presets for GPUs cannot build a Trainer here; their
    options are type-checked by the CLI's parser and their strategy and plugins objects are built."""
    import yaml

    from mmcrystal.train import run_stage

    args = ["-c", str(CONFIGS / "tiny" / "align.yaml"), "-c", str(preset), "--data.root", str(tmp_path),
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    trainer_cfg = yaml.safe_load(preset.read_text())["trainer"]
    if trainer_cfg.get("accelerator", "cpu") == "cpu":
        if trainer_cfg.get("strategy") == "ddp":
            args += ["--trainer.devices", "1"]  # one process here; the preset itself asks for 2
        cli = run_stage("align", args, run=False)
        assert cli.trainer is not None and cli.run_options.checkpoint_every_n_steps > 0
        if preset.name == "compile.yaml":
            assert cli.run_options.compile
        return
    from jsonargparse import ArgumentParser
    from lightning.fabric.plugins.environments import ClusterEnvironment
    from lightning.pytorch.cli import LightningArgumentParser
    from lightning.pytorch.strategies import Strategy

    from mmcrystal.train import RunOptions

    parser = LightningArgumentParser(exit_on_error=False)  # the CLI's trainer and run options, type-checked
    parser.add_lightning_class_args(L.Trainer, "trainer")
    parser.add_class_arguments(RunOptions, "run")
    config = parser.parse_path(str(preset))
    assert config.trainer.accelerator == "gpu" and config.trainer.precision == "bf16-mixed"
    objects = {"strategy": Strategy, "plugins": list[ClusterEnvironment]}
    for key, kind in objects.items():
        value = config.trainer.get(key)
        if value is None or isinstance(value, str):
            continue
        typed = ArgumentParser(exit_on_error=False)
        typed.add_argument("--value", type=kind)
        built = typed.instantiate_classes(typed.parse_object({"value": value})).value
        if preset.name == "fsdp.yaml":
            assert type(built).__name__ == "FSDPStrategy" and built.kwargs["auto_wrap_policy"] is not None
        if preset.name == "slurm.yaml":
            assert built[0].auto_requeue and built[0].requeue_signal == signal.SIGUSR1


def _compiled_fit(tmp_path, data_root, name: str, backend: str) -> tuple[L.Trainer, CompileNetworks]:
    task = build_task(name, data_root)
    compiler = CompileNetworks(backend=backend)
    run = trainer(tmp_path / name, 3, [compiler], enable_checkpointing=False)
    run.fit(task, datamodule=datamodule(data_root))
    return run, compiler


@pytest.mark.parametrize("name", ["align", "diffuse"])
def test_tasks_train_under_torch_compile_tracing(tmp_path, data_root, name):
    """Dynamo captures the compile targets with dynamic shapes ("eager" backend: tracing without code generation,
    fast on CPU); the weights keep their names, so checkpoints and EMA are unaffected."""
    run, compiler = _compiled_fit(tmp_path, data_root, name, "eager")
    assert compiler.compiled == list(run.lightning_module.compile_targets)
    assert torch.isfinite(run.callback_metrics["train/loss"])
    assert not any("_orig_mod" in k for k in run.lightning_module.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["align", "diffuse"])
def test_tasks_train_under_torch_compile_inductor(tmp_path, data_root, name):
    """The real compiler on CPU (C++ code generation; minutes on 2 cores)."""
    run, _ = _compiled_fit(tmp_path, data_root, name, "inductor")
    assert torch.isfinite(run.callback_metrics["train/loss"])


class SignalDuringValidation(L.Callback):
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def test_signal_during_validation_saves_and_the_run_resumes(tmp_path, data_root):
    ckpt = tmp_path / "ckpt"
    callbacks = [SignalDuringValidation(), PreemptionCheckpoint(ckpt), RNGStateCheckpoint()]
    with pytest.raises(TrainingPreempted):
        fit(build_task("align", data_root), data_root, tmp_path, 6, callbacks, val_check_interval=3)
    assert torch.load(ckpt / "last.ckpt", weights_only=True)["global_step"] == 3
    run = fit(build_task("align", data_root), data_root, tmp_path, 6, [PreemptionCheckpoint(ckpt)],
              ckpt_path=str(ckpt / "last.ckpt"), val_check_interval=3)  # fmt: skip
    assert run.global_step == 6


def test_launch_scripts_are_valid_bash():
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("bash not installed")
    scripts = sorted((Path(__file__).resolve().parents[1] / "scripts" / "launch").iterdir())
    assert {p.name for p in scripts} >= {"slurm.sbatch", "torchrun.sh"}
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    sbatch = (scripts[0].parent / "slurm.sbatch").read_text()
    assert "--signal=USR1@" in sbatch and "#SBATCH --requeue" in sbatch and "--ckpt_path last" in sbatch
