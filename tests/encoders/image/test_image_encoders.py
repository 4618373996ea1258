"""Micrograph encoders: plain-torch ViT, transformers ViT/ConvNeXt, and the optional timm backbone."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from encoders import HFImageConfig, TimmImageConfig, ViTImageConfig, build_encoder

HAS_TIMM = importlib.util.find_spec("timm") is not None


def _encode(encoder, x):
    encoder.eval()
    with torch.no_grad():
        return encoder(x)


def test_vit_tokens_follow_the_patch_grid_and_other_sizes_work():
    encoder = build_encoder(ViTImageConfig(image_size=64, patch_size=16, hidden_dim=16, num_layers=1, num_heads=2))
    assert _encode(encoder, torch.rand(2, 1, 64, 64)).tokens.shape == (2, 16, 16)
    assert _encode(encoder, torch.rand(2, 1, 96, 32)).tokens.shape == (2, 12, 16)  # positions resampled
    with pytest.raises(ValueError, match="multiples of 16"):
        _encode(encoder, torch.rand(2, 1, 60, 64))


def test_vit_mean_pool_is_token_average():
    cfg = ViTImageConfig(image_size=32, patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, pool="mean")
    out = _encode(build_encoder(cfg), torch.rand(2, 1, 32, 32))
    torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))


@pytest.mark.parametrize(
    ("cfg", "tokens"),
    [
        (HFImageConfig(arch="vit", image_size=32, patch_size=8, hidden_sizes=(16,), depths=(1,), num_heads=2), 16),
        # stem /4, then /2 per later stage: 32 px -> 4 x 4 tokens
        (HFImageConfig(arch="convnext", image_size=32, hidden_sizes=(8, 16), depths=(1, 1)), 16),
    ],
    ids=["vit", "convnext"],
)
def test_transformers_backbones(cfg, tokens):
    out = _encode(build_encoder(cfg), torch.rand(2, 1, 32, 32))
    assert out.tokens.shape == (2, tokens, cfg.hidden_sizes[-1])
    assert out.pooled.shape == (2, cfg.hidden_sizes[-1])


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed; the missing-extra error cannot occur")
def test_timm_without_vision_extra_raises_a_clear_error():
    with pytest.raises(ImportError, match=r"mmcrystal\[vision\]"):
        build_encoder(TimmImageConfig())


def test_timm_backbone():
    pytest.importorskip("timm", reason="timm is the optional `vision` extra (needs a matching torchvision)")
    encoder = build_encoder(TimmImageConfig(model_name="resnet10t"))
    out = _encode(encoder, torch.rand(2, 1, 64, 64))
    assert out.tokens.shape[2] == out.pooled.shape[1] == encoder.output_dim
