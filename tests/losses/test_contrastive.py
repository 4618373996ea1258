"""Contrastive losses against naive loops; presence masks; duplicate positives; no NaN on tiny batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmcrystal.losses.contrastive import clip_loss, group_ids, siglip_loss


def _embeddings(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    b = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    return a, b


def naive_clip(a, b, scale, positives):
    """Row-by-row cross-entropy with uniform mass over the positives of each row, both directions."""
    n = a.shape[0]
    total = 0.0
    for direction in (0, 1):
        for i in range(n):
            logits = [scale * float(a[i] @ b[j]) if direction == 0 else scale * float(b[i] @ a[j]) for j in range(n)]
            log_z = math.log(sum(math.exp(x) for x in logits))
            pos = [j for j in range(n) if (positives[i][j] if direction == 0 else positives[j][i])]
            total += -sum(logits[j] - log_z for j in pos) / len(pos) / n
    return total / 2


def naive_siglip(a, b, scale, bias, positives):
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if positives[i][j] else -1.0
            total -= math.log(1 / (1 + math.exp(-z * (scale * float(a[i] @ b[j]) + bias))))
    return total / n


def test_clip_matches_naive_and_cross_entropy():
    a, b = _embeddings()
    scale = torch.tensor(7.0)
    eye = [[i == j for j in range(6)] for i in range(6)]
    assert clip_loss(a, b, scale).item() == pytest.approx(naive_clip(a, b, 7.0, eye), rel=1e-5)
    logits = scale * a @ b.t()
    reference = 0.5 * (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.t(), torch.arange(6)))
    assert clip_loss(a, b, scale).item() == pytest.approx(reference.item(), rel=1e-6)


def test_duplicate_captions_are_positives_not_negatives():
    a, b = _embeddings()
    captions = ["cubic NaCl", "x", "cubic NaCl", "y", "z", "x"]
    groups = group_ids(captions)
    positives = [[i == j or captions[i] == captions[j] for j in range(6)] for i in range(6)]
    got = clip_loss(a, b, torch.tensor(5.0), groups_b=groups)
    assert got.item() == pytest.approx(naive_clip(a, b, 5.0, positives), rel=1e-5)
    assert got.item() != pytest.approx(clip_loss(a, b, torch.tensor(5.0)).item(), rel=1e-3)


def test_siglip_matches_naive():
    a, b = _embeddings(5)
    groups = group_ids(["p", "q", "p", "r", "s"])
    positives = [[i == j or groups[i] == groups[j] for j in range(5)] for i in range(5)]
    got = siglip_loss(a, b, torch.tensor(10.0), torch.tensor(-10.0), groups_a=groups)
    assert got.item() == pytest.approx(naive_siglip(a, b, 10.0, -10.0, positives), rel=1e-5)


def test_absent_pairs_contribute_nothing():
    a, b = _embeddings(6)
    present = torch.tensor([True, False, True, True, False, True])
    masked = clip_loss(a, b, torch.tensor(4.0), present=present)
    subset = clip_loss(a[present], b[present], torch.tensor(4.0))
    assert masked.item() == pytest.approx(subset.item(), rel=1e-6)
    # garbage in the absent rows changes nothing, and gets no gradient
    a2 = a.clone().requires_grad_(True)
    noisy = torch.where(present[:, None], a2, a2 * 1e3)
    clip_loss(noisy, b, torch.tensor(4.0), present=present).backward()
    assert torch.all(a2.grad[~present] == 0)


@pytest.mark.parametrize("n_present", [0, 1])
def test_tiny_batches_give_zero_not_nan(n_present):
    a, b = _embeddings(4)
    a.requires_grad_(True)
    present = torch.zeros(4, dtype=torch.bool)
    present[:n_present] = True
    for loss in (
        clip_loss(a, b, torch.tensor(3.0), present=present),
        siglip_loss(a, b, torch.tensor(3.0), torch.tensor(-1.0), present=present) if n_present == 0 else None,
    ):
        if loss is None:
            continue
        assert torch.isfinite(loss) and loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(a.grad).all()
