"""Masked (absorbing-state) type diffusion: forward marginal, posterior, loss, fixed composition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcrystal.diffusion.processes.atom_types import AtomTypeConfig, AtomTypeProcess


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_masked_fraction_follows_the_schedule(schedule):
    process = AtomTypeProcess(AtomTypeConfig(schedule=schedule))
    gen = torch.Generator().manual_seed(0)
    n = 50_000
    x0 = torch.randint(0, process.num_classes, (n,), generator=gen)
    for t_value in (0.05, 0.3, 0.7, 1.0):
        t = torch.full((n,), t_value)
        x_t, target = process.corrupt(x0, t, generator=gen)
        masked = x_t == process.mask_index
        expected = 1.0 - float(process.alpha(t[:1]))
        assert abs(float(masked.float().mean()) - expected) < 4 * (0.25 / n) ** 0.5 + 1e-6
        assert torch.equal(x_t[~masked], x0[~masked]) and torch.equal(target, x0)


def test_posterior_rows_are_distributions_and_carry_over():
    process = AtomTypeProcess(AtomTypeConfig(num_classes=5))
    x_t = torch.tensor([5, 2, 5, 0])
    x0_probs = torch.softmax(torch.randn(4, 5, generator=torch.Generator().manual_seed(1)), dim=-1)
    t, s = torch.full((4,), 0.8), torch.full((4,), 0.3)
    probs = process.posterior_probs(x_t, x0_probs, t, s)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    torch.testing.assert_close(probs[1], F.one_hot(torch.tensor(2), 6).float())  # unmasked atoms never change
    # masked atoms (alpha_t = 0.2, alpha_s = 0.7): stay masked with (1 - alpha_s) / (1 - alpha_t) = 0.3 / 0.8
    torch.testing.assert_close(probs[0, 5], torch.tensor(0.3 / 0.8))
    torch.testing.assert_close(probs[0, :5], (0.5 / 0.8) * x0_probs[0])


def test_step_with_exact_x0_gives_the_marginal_at_s():
    """Composing q(x_t | x0) with the posterior step reproduces q(x_s | x0): masked fraction 1 - alpha_s."""
    process = AtomTypeProcess()
    gen = torch.Generator().manual_seed(2)
    n = 40_000
    x0 = torch.randint(0, process.num_classes, (n,), generator=gen)
    t, s = torch.full((n,), 0.8), torch.full((n,), 0.25)
    x_t, _ = process.corrupt(x0, t, generator=gen)
    logits = torch.full((n, process.num_classes), -1e4).scatter(1, x0.unsqueeze(1), 0.0)
    x_s = process.step(x_t, logits, t, s, generator=gen)
    masked = x_s == process.mask_index
    assert abs(float(masked.float().mean()) - 0.25) < 4 * (0.25 / n) ** 0.5
    assert torch.equal(x_s[~masked], x0[~masked])
    final = process.step(x_s, logits, s, torch.zeros(n), generator=gen)  # s = 0: everything unmasked
    assert torch.equal(final, x0)


@pytest.mark.parametrize("weighting", ["elbo", "uniform"])
def test_loss_is_weighted_masked_cross_entropy(weighting):
    process = AtomTypeProcess(AtomTypeConfig(num_classes=7, weighting=weighting))
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, 7, (64,), generator=gen)
    t = torch.rand(64, generator=gen) * 0.9 + 0.05
    x_t, target = process.corrupt(x0, t, generator=gen)
    logits = torch.randn(64, 7, generator=gen)
    masked = x_t == process.mask_index
    ce = F.cross_entropy(logits, target, reduction="none")
    weight = 1.0 / t if weighting == "elbo" else torch.ones_like(t)  # linear schedule: -alpha' / (1 - alpha) = 1 / t
    expected = (weight * ce * masked).sum() / 64
    torch.testing.assert_close(process.loss(logits, target, x_t, t), expected)


def test_fixed_composition_is_not_diffused():
    process = AtomTypeProcess(AtomTypeConfig(fixed_composition=True))
    x0 = torch.tensor([0, 7, 25, 7])
    t = torch.full((4,), 0.9)
    x_t, target = process.corrupt(x0, t)
    assert torch.equal(x_t, x0)
    logits = torch.randn(4, process.num_classes, requires_grad=True)
    assert float(process.loss(logits, target, x_t, t).detach()) == 0.0
    assert torch.equal(process.step(x_t, logits, t, torch.zeros(4)), x0)


def test_class_mapping_round_trip_and_range():
    process = AtomTypeProcess()
    z = torch.tensor([1, 8, 26, 100])
    assert torch.equal(process.to_atomic_numbers(process.to_classes(z)), z)
    with pytest.raises(ValueError):
        process.to_classes(torch.tensor([0, 3]))
