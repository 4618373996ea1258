"""One DDP training step on 2 gloo processes equals one single-process step on the same global batch: loss,
gradients (DDP's averaged ones), parameters after AdamW and, for the decoder, the EMA copy.

Alignment: the contrastive loss runs over the gathered global batch, so the single-process reference is the loss of
the 8-crystal batch. Diffusion: the loss is a per-rank mean and DDP averages gradients, so the reference is the mean
of the two halves' losses, each drawn with the noise its rank drew (both seeded identically). Dropout is switched
off (the two runs would draw different masks). Tolerances: float32 sums in a different order, rtol 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from ddp_setups import (
    Capture,
    SeedEachRank,
    build_task,
    fixed_loader,
    no_dropout,
    prepare_uneven,
    rank_batch,
    run_ranks,
    trainer,
    weights,
)

SEED_BASE = 100


def one_step(rank: int, data_root: str, tmp: str) -> dict:
    out = {}
    for name in ("align", "diffuse"):
        task = build_task(name, data_root)
        no_dropout(task)
        capture = Capture()
        run = trainer(f"{tmp}/{name}", 1, [capture, SeedEachRank(SEED_BASE)], devices=2,
                      use_distributed_sampler=False, enable_checkpointing=False)  # fmt: skip
        run.fit(task, train_dataloaders=fixed_loader([rank_batch(data_root, rank)]))
        out[name] = {"loss": capture.loss, "grads": capture.grads, "weights": weights(task)}
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, shared_data):
    return prepare_uneven(tmp_path_factory.mktemp("ddp_data"), shared_data)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("ddp_step")
    return run_ranks(one_step, (str(data_root), str(tmp)), tmp / "result", timeout=240)


def _reference(name: str, data_root) -> dict:
    task = build_task(name, data_root)
    no_dropout(task)
    task.train()
    if name == "align":
        loss = task.compute_loss(rank_batch(data_root, None))[0]
    else:  # each half with the noise its rank drew
        halves = []
        for rank in (0, 1):
            torch.manual_seed(SEED_BASE + rank)
            halves.append(task.compute_losses(rank_batch(data_root, rank))["loss"])
        loss = torch.stack(halves).mean()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in task.named_parameters() if p.grad is not None}
    optim = task.configure_optimizers()  # no trainer: a 1-step schedule, as max_steps=1 gives
    optim["optimizer"].step()
    if name == "diffuse":
        task.ema.update(task.model.denoiser)
    return {"loss": float(loss), "grads": grads, "weights": weights(task), "halves": locals().get("halves")}


@pytest.mark.parametrize("name", ["align", "diffuse"])
def test_ddp_step_equals_single_process_step(ddp, data_root, name):
    ref = _reference(name, data_root)
    rank0, rank1 = ddp[0][name], ddp[1][name]
    if name == "align":  # every rank computes the global-batch loss
        assert rank0["loss"] == pytest.approx(ref["loss"], rel=1e-5) and rank1["loss"] == pytest.approx(ref["loss"])
    else:
        assert (rank0["loss"] + rank1["loss"]) / 2 == pytest.approx(ref["loss"], rel=1e-5)
        assert rank0["loss"] != pytest.approx(rank1["loss"])  # the two halves really differ
    assert set(rank0["grads"]) == set(ref["grads"]) and len(ref["grads"]) > 10
    for key, want in ref["grads"].items():
        torch.testing.assert_close(rank0["grads"][key], want, rtol=1e-4, atol=1e-7, msg=key)
    initial = build_task(name, data_root).state_dict()
    for key, want in ref["weights"].items():
        torch.testing.assert_close(rank0["weights"][key], want, rtol=1e-4, atol=1e-6, msg=key)
        torch.testing.assert_close(rank1["weights"][key], rank0["weights"][key], rtol=0, atol=0, msg=key)
    assert sum(not torch.equal(ref["weights"][k], initial[k]) for k in initial) > 10  # the step moved weights
    if name == "diffuse":
        assert int(ref["weights"]["ema.num_updates"]) == int(rank0["weights"]["ema.num_updates"]) == 1
