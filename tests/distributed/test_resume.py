"""Kill-and-resume on one CPU process reaches bitwise the same weights, optimiser state and EMA as an uninterrupted
run: SIGTERM mid-epoch (alignment and diffusion) and at the end of an epoch, and a crash after a periodic checkpoint.
A run resumed without the RNG state differs (the control that shows these tests can fail). Exactness holds on CPU
with the same world size, loader workers, batch size and seed (see mmcrystal/data/loader.py)."""

from __future__ import annotations

import signal

import lightning as L
import pytest
import torch
from ddp_setups import (
    SignalAtStep,
    assert_same_state,
    build_task,
    fit,
    optimizer_state,
    prepare_uneven,
    resume_callbacks,
    uninterrupted,
    weights,
)

from mmcrystal.callbacks import RNGStateCheckpoint, TrainingPreempted

TOTAL = 8  # optimiser steps; 60 crystals / batch 4 = 15 batches per epoch


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, shared_data):
    return prepare_uneven(tmp_path_factory.mktemp("resume_data"), shared_data)


@pytest.mark.parametrize(("name", "stop", "kwargs"), [
    ("align", TOTAL // 2, {}),
    ("diffuse", TOTAL // 2, {}),
    ("diffuse", 5, {"limit_train_batches": 5, "limit_val_batches": 2}),  # signal at the end of an epoch
    ("diffuse", 3, {"data": {"in_memory": True}}),  # the in-memory path (a seeded, resumable sampler)
    ("align", 3, {"data": {"num_workers": 2}}),  # loader worker processes (their round-robin order kept)
    ("diffuse", 3, {"accumulate_grad_batches": 2, "gradient_clip_val": 0.5}),  # saved between optimiser steps only
], ids=["align", "diffuse", "diffuse-epoch-end", "diffuse-in-memory", "align-2-workers", "diffuse-accumulate"])  # fmt: skip
def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path, data_root, name, stop, kwargs):
    reference = uninterrupted(name, data_root, tmp_path / "a", TOTAL, **kwargs)

    torch.manual_seed(0)
    task = build_task(name, data_root, seed=0)
    ckpt = tmp_path / "b" / "ckpt"
    with pytest.raises(TrainingPreempted) as info:
        fit(task, data_root, tmp_path / "b", TOTAL, resume_callbacks(ckpt, extra=[SignalAtStep(stop)]), **kwargs)
    assert info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers handed back
    saved = torch.load(ckpt / "last.ckpt", weights_only=True)  # no pickled objects, RNG states included
    assert saved["global_step"] == stop and len(saved["rng_states"]) == 1

    resumed = build_task(name, data_root, seed=1)  # different initial weights: everything comes from the file
    run = fit(resumed, data_root, tmp_path / "b", TOTAL, resume_callbacks(ckpt), ckpt_path="last", **kwargs)
    assert run.global_step == TOTAL
    assert_same_state((weights(resumed), optimizer_state(run)), reference)
    if name == "diffuse":
        assert int(resumed.ema.num_updates) == TOTAL


class CrashAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("node lost")


def test_hard_kill_resumes_from_the_periodic_checkpoint(tmp_path, data_root):
    reference = uninterrupted("diffuse", data_root, tmp_path / "a", TOTAL)
    torch.manual_seed(0)
    task = build_task("diffuse", data_root, seed=0)
    ckpt = tmp_path / "b" / "ckpt"
    with pytest.raises(RuntimeError, match="node lost"):  # no signal, no save: only the step-3 checkpoint remains
        fit(task, data_root, tmp_path / "b", TOTAL, resume_callbacks(ckpt, every=3, extra=[CrashAtStep(5)]))
    assert torch.load(ckpt / "last.ckpt", weights_only=True)["global_step"] == 3
    resumed = build_task("diffuse", data_root, seed=1)
    run = fit(resumed, data_root, tmp_path / "b", TOTAL, resume_callbacks(ckpt, every=3), ckpt_path="last")
    assert_same_state((weights(resumed), optimizer_state(run)), reference)


def test_without_rng_state_the_resumed_run_differs(tmp_path, data_root):
    """The RNG callback matters: resuming without it draws other diffusion noise (so the test above can fail)."""
    reference = uninterrupted("diffuse", data_root, tmp_path / "a", TOTAL)
    torch.manual_seed(0)
    ckpt = tmp_path / "b" / "ckpt"
    no_rng = [c for c in resume_callbacks(ckpt, extra=[SignalAtStep(4)]) if not isinstance(c, RNGStateCheckpoint)]
    with pytest.raises(TrainingPreempted):
        fit(build_task("diffuse", data_root), data_root, tmp_path / "b", TOTAL, no_rng)
    resumed = build_task("diffuse", data_root, seed=1)
    torch.manual_seed(0)
    fit(resumed, data_root, tmp_path / "b", TOTAL, no_rng[1:], ckpt_path="last")
    assert not all(torch.equal(weights(resumed)[k], v) for k, v in reference[0].items())
