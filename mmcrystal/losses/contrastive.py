"""Contrastive objectives for the shared latent space, with presence masks and multi-positive targets.

Two embeddings of the same material (crystal and caption, crystal and XRD, ...) are a positive pair; every other
pairing in the (global) batch is a negative, except pairs that are positives in disguise: two samples with the
same caption, or the same material twice. Chemeleon's text-crystal training met exactly this (identical captions
in one batch); treating them as negatives teaches the model to separate identical inputs. Here such pairs share
the target mass instead (soft, multi-positive targets).

References: CLIP (Radford et al. 2021) symmetric InfoNCE; SigLIP (Zhai et al. 2023) pairwise sigmoid loss.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

__all__ = ["clip_loss", "siglip_loss", "positive_mask", "gather_with_grad", "gather_no_grad", "group_ids"]


def group_ids(keys: list[str]) -> torch.Tensor:
    """(B,) long ids, equal for equal keys, and equal on every rank (a content hash, so they can be gathered)."""
    return torch.tensor(
        [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=7).digest(), "little") for k in keys], dtype=torch.long
    )


def positive_mask(groups_a: torch.Tensor | None, groups_b: torch.Tensor | None, n: int, device) -> torch.Tensor:
    """(n, n) bool: True where row i and column j are positives (the diagonal, and equal group ids)."""
    positives = torch.eye(n, dtype=torch.bool, device=device)
    for groups in (groups_a, groups_b):
        if groups is not None:
            positives |= groups[:, None] == groups[None, :]
    return positives


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    # A zero that keeps the graph, so DDP sees every parameter used even when a batch has no pair.
    return sum(t.sum() for t in tensors) * 0.0


def clip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    present: torch.Tensor | None = None,
    groups_a: torch.Tensor | None = None,
    groups_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between two modalities with soft multi-positive targets.

    Args:
        a: (B, D) L2-normalised embeddings of modality A.
        b: (B, D) L2-normalised embeddings of modality B; row i of a and b is the same material.
        logit_scale: Scalar, the inverse temperature (already exponentiated and clamped).
        present: (B,) bool, True where both modalities are present; absent pairs contribute nothing.
        groups_a: (B,) long, samples with equal ids are duplicates in modality A (e.g. identical captions).
        groups_b: (B,) long, the same for modality B.

    Returns:
        Scalar loss; 0 (with a graph) when fewer than 2 pairs are present, never NaN.
    """
    if present is not None:
        a, b = a[present], b[present]
        groups_a = groups_a[present] if groups_a is not None else None
        groups_b = groups_b[present] if groups_b is not None else None
    n = a.shape[0]
    if n < 2:
        return _zero(a, b, logit_scale)
    logits = logit_scale * a @ b.t()  # (n, n)
    targets = positive_mask(groups_a, groups_b, n, a.device).float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    loss_ab = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    loss_ba = torch.sum(-targets.t() * F.log_softmax(logits.t(), dim=1), dim=1).mean()
    return 0.5 * (loss_ab + loss_ba)


def siglip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    present: torch.Tensor | None = None,
    groups_a: torch.Tensor | None = None,
    groups_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise sigmoid loss (SigLIP): every (i, j) is a binary positive/negative decision.

    Args mirror `clip_loss`, plus ``logit_bias`` (scalar; SigLIP initialises it at -10 and the scale at 10).
    Returns the sum over pairs divided by the number of present samples, as in the SigLIP paper.
    """
    if present is not None:
        a, b = a[present], b[present]
        groups_a = groups_a[present] if groups_a is not None else None
        groups_b = groups_b[present] if groups_b is not None else None
    n = a.shape[0]
    if n < 1:
        return _zero(a, b, logit_scale, logit_bias)
    logits = logit_scale * a @ b.t() + logit_bias
    labels = positive_mask(groups_a, groups_b, n, a.device).float() * 2 - 1  # +1 positives, -1 negatives
    return -F.logsigmoid(labels * logits).sum() / n


# ------------------------------------------------------------------------------------------------- distributed
def _world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient of the gathered tensor and returns the local slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        dist = torch.distributed
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)  # every rank's loss depends on this rank's rows
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping gradients.

    The backward pass sums the gradients of every rank's copy of the loss into the local slice, so with DDP's
    gradient averaging the result equals the single-process gradient on the concatenated batch (checked by
    tests/losses/test_contrastive_ddp.py). Requires equal batch sizes on every rank, which the loader guarantees
    for training.
    """
    if _world() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate masks, ids and other non-differentiable tensors from every rank."""
    world = _world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
