"""Spectrum encoder: presets, token counts, input layouts, any length, normalisation."""

from __future__ import annotations

import pytest
import torch

from encoders import SpectrumConfig, build_encoder, dos_config, xrd_config

TINY = dict(hidden_dim=16, num_layers=1, num_heads=2, stem_channels=(8, 16))


def _encode(encoder, x):
    encoder.eval()
    with torch.no_grad():
        return encoder(x)


@pytest.mark.parametrize(("num_bins", "tokens"), [(4096, 256), (1024, 256), (1000, 250)])
def test_xrd_preset_token_counts(num_bins, tokens):
    encoder = build_encoder(xrd_config(num_bins, **TINY))
    out = _encode(encoder, torch.rand(2, num_bins))
    assert out.tokens.shape == (2, tokens, 16)


def test_any_length_is_accepted():
    encoder = build_encoder(xrd_config(4096, **TINY))
    for length in (4096, 1024, 777):
        out = _encode(encoder, torch.rand(3, length))
        assert out.tokens.shape[1] == -(-length // 16) and torch.isfinite(out.pooled).all()


def test_two_and_three_dimensional_inputs_agree():
    encoder = build_encoder(dos_config(256, **TINY))
    x = torch.randn(4, 256)
    torch.testing.assert_close(_encode(encoder, x).pooled, _encode(encoder, x.unsqueeze(1)).pooled)


def test_spin_resolved_dos_and_channel_check():
    encoder = build_encoder(dos_config(512, in_channels=2, **TINY))
    assert _encode(encoder, torch.randn(2, 2, 512)).tokens.shape == (2, 128, 16)
    with pytest.raises(ValueError, match="expected"):
        _encode(encoder, torch.randn(2, 512))


def test_xrd_is_intensity_scale_invariant_and_dos_is_not():
    x = torch.rand(3, 1024)
    xrd = build_encoder(xrd_config(1024, **TINY))
    torch.testing.assert_close(_encode(xrd, 37.0 * x).pooled, _encode(xrd, x).pooled, rtol=1e-5, atol=1e-5)
    dos = build_encoder(dos_config(1024, **TINY))
    assert (_encode(dos, 37.0 * x).pooled - _encode(dos, x).pooled).abs().max() > 1e-3


def test_peak_position_matters():
    encoder = build_encoder(SpectrumConfig(num_bins=512, stem_strides=(2, 2), pool="mean", **TINY))
    a, b = torch.zeros(1, 512), torch.zeros(1, 512)
    a[0, 100], b[0, 400] = 1.0, 1.0
    assert (_encode(encoder, a).pooled - _encode(encoder, b).pooled).abs().max() > 1e-4
