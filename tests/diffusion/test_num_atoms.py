"""Atom-count head and the histogram prior."""

from __future__ import annotations

import pytest
import torch

from mmcrystal.diffusion import Condition, NumAtomsConfig, NumAtomsPredictor, histogram_prior, sample_num_atoms
from mmcrystal.diffusion.num_atoms import draw_num_atoms, restrict_to_multiples


def test_histogram_prior_and_sampling_frequencies():
    probs = histogram_prior({"2": 10, "5": 30, "40": 60, "300": 5}, max_atoms=64)
    assert probs.shape == (64,)
    torch.testing.assert_close(probs[[1, 4, 39]], torch.tensor([10 / 100, 30 / 100, 60 / 100]))  # 300 is dropped
    draws = sample_num_atoms(probs, num_samples=20_000, generator=torch.Generator().manual_seed(0))
    assert set(draws.unique().tolist()) == {2, 5, 40}
    assert abs(float((draws == 40).float().mean()) - 0.6) < 0.015
    with pytest.raises(ValueError):
        histogram_prior({"300": 5}, max_atoms=64)


def test_predictor_learns_counts_from_the_condition():
    """Counts that depend on the condition: the CE falls far below the entropy of the marginal."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    predictor = NumAtomsPredictor(NumAtomsConfig(cond_dim=8, hidden_dim=32, num_layers=2, max_atoms=20))
    tokens = torch.randn(64, 2, 8, generator=gen)
    cond = Condition.from_parts({"text": (tokens, torch.ones(64, 2, dtype=torch.bool))})
    num_atoms = 1 + (cond.pooled()[:, 0] > 0).long() * 7 + (cond.pooled()[:, 1] > 0).long() * 3  # 1, 4, 8 or 11
    optimizer = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    for _ in range(150):
        loss = predictor.loss(predictor(cond.pooled()), num_atoms)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.3  # the marginal over 4 counts has entropy ~1.39
    probs = predictor.probs(cond)
    assert probs.shape == (64, 20)
    predicted = sample_num_atoms(probs, generator=gen)
    assert float((predicted == num_atoms).float().mean()) > 0.8


def test_no_condition_uses_the_histogram():
    predictor = NumAtomsPredictor(NumAtomsConfig(cond_dim=4, max_atoms=8))
    prior = histogram_prior({"3": 1}, max_atoms=8)
    draws = sample_num_atoms(predictor.probs(None, prior), num_samples=5)
    assert torch.equal(draws, torch.full((5,), 3))
    with pytest.raises(ValueError):
        predictor.probs(None)
    with pytest.raises(ValueError):
        predictor.loss(torch.zeros(1, 8), torch.tensor([9]))


def test_restrict_to_multiples_and_seeded_draws():
    probs = torch.softmax(torch.randn(20, generator=torch.Generator().manual_seed(0)), 0)
    sevens = restrict_to_multiples(probs, 7)
    assert torch.nonzero(sevens).flatten().tolist() == [6, 13]  # n = 7 and 14 (21 > max_atoms 20)
    torch.testing.assert_close(sevens[[6, 13]], probs[[6, 13]] / probs[[6, 13]].sum())
    no_mass = torch.zeros(20)
    no_mass[0] = 1.0
    torch.testing.assert_close(restrict_to_multiples(no_mass, 5)[[4, 9, 14, 19]], torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="max_atoms"):
        restrict_to_multiples(probs, 21)
    seeds = list(range(100, 400))
    draws = draw_num_atoms(sevens, seeds)
    assert set(draws.tolist()) == {7, 14}
    assert torch.equal(draws[:10], draw_num_atoms(sevens, seeds[:10]))  # one stream per seed, not per call
    assert torch.equal(draw_num_atoms(probs, seeds[5:8]), draw_num_atoms(probs, seeds)[5:8])
    frac_seven = float((draws == 7).float().mean())
    assert abs(frac_seven - float(sevens[6])) < 4 * (0.25 / len(seeds)) ** 0.5
