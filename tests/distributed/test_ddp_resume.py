"""Kill-and-resume with DDP (2 gloo processes): SIGTERM reaches rank 1 only at step 4; both ranks agree to stop,
write one checkpoint holding both ranks' RNG states, and the resumed run reaches bitwise the same weights (EMA
included) and optimiser state at step 8 as an uninterrupted 2-process run, for alignment (gathered contrastive loss,
dropout on) and diffusion (per-rank noise)."""

from __future__ import annotations

import signal
from pathlib import Path

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
    run_ranks,
    uninterrupted,
    weights,
)

from mmcrystal.callbacks import TrainingPreempted

TOTAL, STOP = 8, 4


def kill_and_resume(rank: int, data_root: str, tmp: str) -> dict:
    out = {}
    for name in ("align", "diffuse"):
        root = Path(tmp) / name
        reference = uninterrupted(name, data_root, root / "a", TOTAL, devices=2)
        torch.manual_seed(0)
        ckpt = root / "b" / "ckpt"
        callbacks = resume_callbacks(ckpt, extra=[SignalAtStep(STOP, signal.SIGTERM, ranks=(1,))])
        try:
            fit(build_task(name, data_root), data_root, root / "b", TOTAL, callbacks, devices=2)
            code = None
        except TrainingPreempted as stop:
            code = stop.code
        saved = torch.load(ckpt / "last.ckpt", weights_only=True)
        resumed = build_task(name, data_root, seed=1)
        run = fit(resumed, data_root, root / "b", TOTAL, resume_callbacks(ckpt), ckpt_path="last", devices=2)
        out[name] = {
            "code": code,
            "saved_step": saved["global_step"],
            "rng_ranks": len(saved["rng_states"]),
            "reference": reference,
            "resumed": (weights(resumed), optimizer_state(run)),
        }
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory, shared_data):
    data_root = prepare_uneven(tmp_path_factory.mktemp("resume_data"), shared_data)
    tmp = tmp_path_factory.mktemp("ddp_resume")
    return run_ranks(kill_and_resume, (str(data_root), str(tmp)), tmp / "result", timeout=400)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["align", "diffuse"])
def test_ddp_kill_and_resume_matches_uninterrupted_run(results, name):
    for rank in (0, 1):
        got = results[rank][name]
        assert got["code"] == 128 + signal.SIGTERM  # both ranks stopped, though only rank 1 got the signal
        assert got["saved_step"] == STOP and got["rng_ranks"] == 2
        assert_same_state(got["resumed"], got["reference"])
    ref0, ref1 = results[0][name]["reference"][0], results[1][name]["reference"][0]
    assert all(torch.equal(ref0[k], ref1[k]) for k in ref0)  # DDP kept the replicas identical
