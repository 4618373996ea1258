"""Resume points: ``last.ckpt`` every N optimiser steps and at the end of training, and on preemption signals.

Signals (SIGTERM from a scheduler, SLURM's ``--signal=USR1@90`` warning) are handled the safe way: the handler
only records the signal; the checkpoint is written at the next optimiser-step boundary (or validation batch),
by every rank at the same step, in normal code. Lightning's own SLURM handler saves from inside the signal
handler, mid-step, where a DDP rank can be inside a collective (Lightning issue #21406); `PreemptionCheckpoint`
replaces it for the duration of training and still honours `SLURMEnvironment(auto_requeue=True,
requeue_signal=SIGUSR1)`: on that signal the job is requeued with ``scontrol requeue`` after the save.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["StepCheckpoint", "PreemptionCheckpoint", "TrainingPreempted", "LAST_NAME"]

log = logging.getLogger(__name__)

LAST_NAME = "last"  # ``<dirpath>/last.ckpt``: what ``--ckpt_path last`` resumes from


class TrainingPreempted(SystemExit):
    """Raised on every rank once the preemption checkpoint is written; the exit status is 128 + the signal number
    (as a shell reports a process killed by that signal), so launchers see an interrupted, not a finished, run."""


class StepCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` every `every_n_train_steps` optimiser steps and when training ends.

    Always the same file (no version suffixes), written atomically by Lightning, so a hard kill (no signal, node
    failure) loses at most `every_n_train_steps` steps: ``--ckpt_path last`` resumes from it.

    Args:
        dirpath: Folder of the checkpoint.
        every_n_train_steps: Period in optimiser steps; 0 saves only when training ends.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 1000):
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}")
        super().__init__(
            dirpath=str(dirpath),
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's version saves only if nothing was saved in this run; the end state is the resume point
        if trainer.fast_dev_run or self._last_global_step_saved == trainer.global_step:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _signal_number(name: str | int) -> int | None:
    if isinstance(name, int):
        return name
    value = getattr(signal, name.upper(), None)
    return int(value) if value is not None else None  # SIGUSR1 does not exist on Windows


def _slurm_job_id() -> str | None:
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_slurm_job() -> bool:
    """``scontrol requeue`` this job (array-aware); True when SLURM accepted it."""
    job = _slurm_job_id()
    if job is None:
        log.warning("requeue asked for, but SLURM_JOB_ID is not set: not running under SLURM")
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("scontrol requeue %s failed: %s", job, err)
        return False
    if result.returncode != 0:
        log.error("scontrol requeue %s failed (%d): %s", job, result.returncode, result.stderr.strip())
        return False
    log.info("requeued SLURM job %s", job)
    return True


class PreemptionCheckpoint(L.Callback):
    """On a preemption signal: write ``<dirpath>/last.ckpt`` at the next step boundary, requeue on SLURM, stop.

    Every rank checks at each optimiser-step end (and each validation batch end while fitting) whether any rank
    got a signal (one all-reduce of a scalar); then all ranks save together and raise `TrainingPreempted`.
    Gradient accumulation is respected: the check runs only when an optimiser step has just completed.

    Args:
        dirpath: Checkpoint folder; default: the first `ModelCheckpoint`'s, else ``<default_root_dir>/checkpoints``.
        signals: Signal names to handle (default SIGTERM and SIGUSR1).
        requeue: After saving, ``scontrol requeue`` the job. None (default): when running under SLURM with
            Lightning's `SLURMEnvironment(auto_requeue=True)` and the signal is its ``requeue_signal``.
    """

    def __init__(
        self, dirpath: str | Path | None = None, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1"), requeue=None
    ):
        self.dirpath = None if dirpath is None else str(dirpath)
        self.signals = [n for n in (_signal_number(s) for s in signals) if n is not None]
        self.requeue = requeue
        self.received: int = 0  # signal number, 0 for none
        self._previous: dict[int, object] = {}
        self._checked_step = -1

    # ------------------------------------------------------------------------------------------------ signals
    def _record(self, signum: int, frame) -> None:
        self.received = self.received or signum  # only note it; the work happens at a step boundary

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # installed after Lightning registered its handlers (just before the run stage), replacing them
        self.received, self._checked_step = 0, -1
        if threading.current_thread() is not threading.main_thread():
            log.warning("PreemptionCheckpoint: not on the main thread, signals cannot be handled")
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._record)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    # ------------------------------------------------------------------------------------------------ checks
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._checked_step:  # no optimiser step since the last check (accumulating)
            return
        self._checked_step = trainer.global_step
        self._stop_if_signalled(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._stop_if_signalled(trainer)

    def _agreed_signal(self, trainer: L.Trainer) -> int:
        """The largest signal number any rank received (0: none); the same on every rank."""
        if trainer.world_size == 1:
            return self.received
        flag = torch.tensor(float(self.received), device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(flag, reduce_op="max").item())

    def checkpoint_path(self, trainer: L.Trainer) -> str:
        dirpath = self.dirpath
        if dirpath is None:
            first = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
            dirpath = first.dirpath if first is not None and first.dirpath else None
        dirpath = dirpath or os.path.join(trainer.default_root_dir, "checkpoints")
        return os.path.join(dirpath, f"{LAST_NAME}{ModelCheckpoint.FILE_EXTENSION}")

    def _should_requeue(self, trainer: L.Trainer, signum: int) -> bool:
        if self.requeue is not None:
            return bool(self.requeue) and _slurm_job_id() is not None
        from lightning.fabric.plugins.environments import SLURMEnvironment

        env = getattr(trainer._accelerator_connector, "cluster_environment", None)
        if not isinstance(env, SLURMEnvironment) or not env.auto_requeue:
            return False
        return signum == int(env.requeue_signal or signal.SIGUSR1)

    def _stop_if_signalled(self, trainer: L.Trainer) -> None:
        signum = self._agreed_signal(trainer)
        if not signum:
            return
        path = self.checkpoint_path(trainer)
        if trainer.is_global_zero:
            log.warning("signal %d: saving %s at step %d, then stopping", signum, path, trainer.global_step)
        trainer.save_checkpoint(path)  # every rank (collective dump), rank 0 writes
        if trainer.is_global_zero and self._should_requeue(trainer, signum):
            requeue_slurm_job()
        self._restore_handlers()
        raise TrainingPreempted(128 + signum)
