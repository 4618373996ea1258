"""Building blocks against naive implementations and their defining properties."""

from __future__ import annotations

import math

import torch

from encoders.layers import (
    AttentionPool,
    BesselRBF,
    FourierFeatures,
    GaussianRBF,
    cosine_cutoff,
    masked_mean,
    resample_positions,
    scatter_mean,
    scatter_sum,
    to_padded,
)


def test_scatter_sum_and_mean_match_loops():
    src = torch.randn(10, 4)
    index = torch.tensor([0, 2, 2, 0, 4, 4, 4, 0, 2, 2])
    dim_size = 6  # segments 1, 3 and 5 are empty
    for seg in range(dim_size):
        rows = src[index == seg]
        expected_sum = rows.sum(0) if len(rows) else torch.zeros(4)
        expected_mean = rows.mean(0) if len(rows) else torch.zeros(4)
        torch.testing.assert_close(scatter_sum(src, index, dim_size)[seg], expected_sum)
        torch.testing.assert_close(scatter_mean(src, index, dim_size)[seg], expected_mean)


def test_to_padded_places_rows_and_masks_padding():
    counts = torch.tensor([2, 3, 1])
    segment = torch.repeat_interleave(torch.arange(3), counts)
    x = torch.randn(6, 5, requires_grad=True)
    padded, mask = to_padded(x, segment, counts)
    assert padded.shape == (3, 3, 5)
    assert mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    torch.testing.assert_close(padded[mask], x)
    assert (padded[~mask] == 0).all()
    padded.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_masked_mean_and_attention_pool_ignore_padding():
    tokens = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    torch.testing.assert_close(masked_mean(tokens, mask)[0], tokens[0, :2].mean(0))
    pool = AttentionPool(3)
    before = pool(tokens, mask)
    tokens[0, 2:] = 1e6  # garbage in padded positions
    torch.testing.assert_close(pool(tokens, mask), before)
    assert torch.isfinite(pool(tokens, torch.zeros_like(mask))).all()  # no valid token: zeros, not NaN


def test_fourier_features_are_periodic_and_distinguish_positions():
    fourier = FourierFeatures(num_freqs=6)
    x = torch.rand(20, 3, dtype=torch.float64)
    feats = fourier(x)
    assert feats.shape == (20, 3 * 12)
    torch.testing.assert_close(fourier(x + 1.0), feats)
    torch.testing.assert_close(fourier(x - 3.0), feats)
    assert (fourier(x + 0.1) - feats).abs().max() > 0.1


def test_radial_bases_and_cutoff():
    cutoff = 5.0
    d = torch.tensor([0.0, 1.0, 2.5, 4.999, 5.0, 7.0])
    env = cosine_cutoff(d, cutoff)
    torch.testing.assert_close(env[[0, 4, 5]], torch.tensor([1.0, 0.0, 0.0]))
    assert 0.0 < env[3] < 1e-6 and torch.all(env[:4].diff() < 0)
    gauss = GaussianRBF(num_basis=11, cutoff=cutoff)(torch.tensor([2.5]))
    assert gauss.argmax().item() == 5 and math.isclose(gauss.max().item(), 1.0, rel_tol=1e-6)
    bessel = BesselRBF(num_basis=4, cutoff=cutoff)(d)
    assert torch.isfinite(bessel).all()
    torch.testing.assert_close(bessel[4], torch.zeros(4), atol=1e-6, rtol=0)  # sin(k pi) = 0 at the cutoff


def test_resample_positions_identity_and_resize():
    pos = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(resample_positions(pos, (4, 4)), pos.flatten(2).transpose(1, 2))
    assert resample_positions(pos, (6, 2)).shape == (1, 12, 8)
    line = torch.arange(4.0).view(1, 1, 4)
    doubled = resample_positions(line, (8,)).flatten()
    assert torch.all(doubled.diff() >= 0) and doubled[0] == 0.0 and doubled[-1] == 3.0
