"""Global-batch contrastive loss across 2 gloo processes equals the single-process loss on the concatenated batch,
and so do the DDP-averaged gradients."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmcrystal.losses.contrastive import clip_loss, gather_no_grad, gather_with_grad, group_ids

B_LOCAL, D_IN, D = 5, 7, 4


def _data():
    g = torch.Generator().manual_seed(0)
    x_a = torch.randn(2 * B_LOCAL, D_IN, generator=g)
    x_b = torch.randn(2 * B_LOCAL, D_IN, generator=g)
    present = torch.tensor([1, 1, 0, 1, 1, 1, 1, 0, 1, 1], dtype=torch.bool)
    captions = ["a", "b", "c", "a", "d", "e", "f", "g", "b", "h"]  # duplicates across the two ranks
    return x_a, x_b, present, group_ids(captions)


def _models():
    torch.manual_seed(1)
    return torch.nn.Linear(D_IN, D), torch.nn.Linear(D_IN, D), torch.nn.Parameter(torch.tensor(2.0))


def _loss(model_a, model_b, log_scale, x_a, x_b, present, groups, gather):
    a = F.normalize(model_a(x_a), dim=-1)
    b = F.normalize(model_b(x_b), dim=-1)
    if gather:
        a, b = gather_with_grad(a), gather_with_grad(b)
        present, groups = gather_no_grad(present), gather_no_grad(groups)
    return clip_loss(a, b, log_scale.exp(), present=present, groups_b=groups)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x_a, x_b, present, groups = _data()
    local = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
    model_a, model_b, log_scale = _models()
    loss = _loss(model_a, model_b, log_scale, x_a[local], x_b[local], present[local], groups[local], gather=True)
    loss.backward()
    params = [*model_a.parameters(), *model_b.parameters(), log_scale]
    for p in params:  # what DDP does: average gradients over ranks
        dist.all_reduce(p.grad)
        p.grad /= 2
    if rank == 0:
        torch.save({"loss": loss.detach(), "grads": [p.grad for p in params]}, out)
    dist.barrier()  # let both ranks finish their collectives before tearing the group down
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_loss_and_grads_equal_single_process(tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    distributed = torch.load(out)
    x_a, x_b, present, groups = _data()
    model_a, model_b, log_scale = _models()
    loss = _loss(model_a, model_b, log_scale, x_a, x_b, present, groups, gather=False)
    loss.backward()
    grads = [p.grad for p in (*model_a.parameters(), *model_b.parameters(), log_scale)]
    torch.testing.assert_close(distributed["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    for got, want in zip(distributed["grads"], grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
