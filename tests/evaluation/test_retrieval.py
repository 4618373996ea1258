"""Retrieval metrics against brute-force ranking; zero-shot accuracy on constructed prototypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcrystal.evaluation.retrieval import retrieval_metrics, retrieval_ranks, zero_shot_accuracy


def test_ranks_match_brute_force():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(50, 8, generator=g), dim=-1)
    gal = F.normalize(q + 0.8 * torch.randn(50, 8, generator=g), dim=-1)
    sims = q @ gal.t()
    expected = torch.tensor([int((sims[i] > sims[i, i]).sum()) for i in range(50)])
    assert torch.equal(retrieval_ranks(q, gal, chunk=7), expected)
    metrics = retrieval_metrics(q, gal)
    assert metrics["recall@1"] == pytest.approx(float((expected == 0).float().mean()))
    assert metrics["recall@10"] >= metrics["recall@5"] >= metrics["recall@1"]
    assert metrics["gallery"] == 50 and metrics["chance_recall@1"] == pytest.approx(0.02)


def test_groups_count_duplicates_as_correct():
    gal = torch.eye(4)
    q = torch.eye(4)[[1, 1, 2, 3]]  # query 0 lands on item 1, which carries the same caption as item 0
    assert retrieval_ranks(q, gal)[0] == 1
    assert retrieval_ranks(q, gal, groups=torch.tensor([7, 7, 8, 9]))[0] == 0


def test_zero_shot_accuracy_ignores_unknown_labels():
    prototypes = torch.eye(3)
    emb = torch.eye(3)[[0, 1, 2, 2]]
    assert zero_shot_accuracy(emb, prototypes, torch.tensor([0, 1, 1, -1])) == pytest.approx(2 / 3)
