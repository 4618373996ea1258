"""A small Vision Transformer in plain torch for single-channel micrographs (no torchvision needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from encoders.base import Encoder, EncoderOutput, register_encoder
from encoders.layers.transformer import PatchTransformer, resample_positions


@dataclass
class ViTImageConfig:
    """Config of `ViTImageEncoder` (defaults are ViT-Tiny widths, Touvron et al. 2021).

    Attributes:
        image_size: Side in pixels the learned positional grid is laid out for. Other sizes are accepted (the
            grid is resampled bilinearly) as long as height and width are multiples of `patch_size`.
        patch_size: Side of the square, non-overlapping patches in pixels.
        in_channels: Image channels (1 for grey-scale micrographs).
        hidden_dim: Width D of the transformer, tokens and pooled vector.
        num_layers: Transformer layers.
        num_heads: Attention heads (must divide hidden_dim).
        mlp_ratio: Feed-forward width as a multiple of hidden_dim.
        dropout: Dropout inside the transformer.
        pool: "cls" (learned CLS token) or "mean" over patch tokens.
    """

    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 1
    hidden_dim: int = 192
    num_layers: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    pool: Literal["cls", "mean"] = "cls"


@register_encoder(ViTImageConfig)
class ViTImageEncoder(Encoder):
    """ViT (Dosovitskiy et al. 2021): linear patch embedding, learned 2-D positions, pre-norm transformer.

    Input `(B, C, H, W)` float (normalise intensities upstream); output tokens `(B, (H/p) * (W/p), D)` in
    row-major patch order, all valid.
    """

    modality = "image"

    def __init__(self, config: ViTImageConfig) -> None:
        super().__init__(config)
        dim, patch = config.hidden_dim, config.patch_size
        if config.image_size % patch:
            raise ValueError(f"image_size {config.image_size} must be a multiple of patch_size {patch}")
        self.patch_embed = nn.Conv2d(config.in_channels, dim, kernel_size=patch, stride=patch)
        grid = config.image_size // patch
        self.pos_embedding = nn.Parameter(torch.zeros(1, dim, grid, grid))  # (1, D, g, g)
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        self.transformer = PatchTransformer(
            dim, config.num_layers, config.num_heads, config.mlp_ratio, config.dropout, config.pool
        )

    @property
    def output_dim(self) -> int:
        return self.config.hidden_dim

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        patch = self.config.patch_size
        if images.dim() != 4 or images.shape[-1] % patch or images.shape[-2] % patch:
            raise ValueError(f"expected (B, C, H, W) with H, W multiples of {patch}, got {tuple(images.shape)}")
        x = self.patch_embed(images.to(self.patch_embed.weight.dtype))  # (B, D, H/p, W/p)
        grid = tuple(x.shape[2:])
        patches = x.flatten(2).transpose(1, 2) + resample_positions(self.pos_embedding, grid)  # (B, S, D)
        return self.transformer(patches)
