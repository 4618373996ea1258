"""1-D spectra (XRD patterns, densities of states): strided convolutional stem, then a transformer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from encoders.base import Encoder, EncoderOutput, register_encoder
from encoders.layers.transformer import PatchTransformer, resample_positions


@dataclass
class SpectrumConfig:
    """Config of `SpectrumEncoder`. Use `xrd_config()` / `dos_config()` for the per-modality presets.

    Attributes:
        in_channels: Channels C of the input `(B, C, L)`; 1 for a single pattern, 2 for spin-resolved DOS.
            A `(B, L)` input is read as C = 1.
        num_bins: Length L the learned positional embedding is laid out for. Inputs of other lengths are
            accepted; the embedding is linearly resampled, so token i always covers the same fraction of the
            axis (e.g. of 5-90° 2θ).
        stem_channels: Output channels of each strided Conv1d of the stem.
        stem_strides: Stride of each Conv1d (kernel 2 * stride + 1); their product is the number of bins per
            token, so the transformer sees ceil(L / prod(stem_strides)) tokens.
        hidden_dim: Width D of the transformer, tokens and pooled vector.
        num_layers: Transformer layers.
        num_heads: Attention heads (must divide hidden_dim).
        mlp_ratio: Transformer feed-forward width as a multiple of hidden_dim.
        dropout: Dropout inside the transformer.
        pool: "cls" (learned CLS token) or "mean" over tokens.
        normalize_input: Divide each spectrum by its maximum absolute value first (for XRD, where only relative
            intensities are meaningful); leave False where absolute values matter (DOS in states/eV).
    """

    in_channels: int = 1
    num_bins: int = 4096
    stem_channels: tuple[int, ...] = (64, 128)
    stem_strides: tuple[int, ...] = (4, 4)
    hidden_dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    pool: Literal["cls", "mean"] = "cls"
    normalize_input: bool = True


def xrd_config(num_bins: int = 4096, **overrides) -> SpectrumConfig:
    """Preset for powder XRD intensities on an even 2θ grid (e.g. 4096 or 1024 bins over 5-90°, Cu Kα).

    About 256 tokens: 16 bins per token from 2048 bins up, else 4; intensities are max-normalised.
    """
    strides = (4, 4) if num_bins >= 2048 else (2, 2)
    defaults = dict(in_channels=1, num_bins=num_bins, stem_strides=strides, normalize_input=True)
    return SpectrumConfig(**{**defaults, **overrides})


def dos_config(num_bins: int = 512, in_channels: int = 1, **overrides) -> SpectrumConfig:
    """Preset for densities of states on an even energy grid (e.g. 256-512 bins over -10..10 eV about E_F).

    4 bins per token (0.16 eV at 512 bins over 20 eV); absolute values are kept (no normalisation).
    """
    defaults = dict(
        in_channels=in_channels,
        num_bins=num_bins,
        stem_channels=(64, 128),
        stem_strides=(2, 2),
        normalize_input=False,
    )
    return SpectrumConfig(**{**defaults, **overrides})


def _conv_stem(in_channels: int, channels: tuple[int, ...], strides: tuple[int, ...]) -> nn.Sequential:
    """Strided Conv1d + GroupNorm + GELU per stage; a stride-s stage maps L bins to ceil(L / s)."""
    if len(channels) != len(strides) or not channels:
        raise ValueError(f"stem_channels {channels} and stem_strides {strides} must be non-empty, same length")
    layers: list[nn.Module] = []
    prev = in_channels
    for ch, stride in zip(channels, strides, strict=True):
        layers += [nn.Conv1d(prev, ch, 2 * stride + 1, stride, padding=stride), nn.GroupNorm(1, ch), nn.GELU()]
        prev = ch
    return nn.Sequential(*layers)


@register_encoder(SpectrumConfig)
class SpectrumEncoder(Encoder):
    """Encoder of 1-D spectra: a strided convolutional stem turns bins into patch tokens, a transformer mixes them.

    The stem is a learned, overlapping patch embedding (convolutions see local peak shapes), the transformer
    relates distant peaks. Input `(B, L)` or `(B, C, L)` float; output tokens `(B, ceil(L / prod(strides)), D)`,
    all valid (presence of the modality is handled upstream).
    """

    modality = "spectrum"

    def __init__(self, config: SpectrumConfig) -> None:
        super().__init__(config)
        dim = config.hidden_dim
        self.stem = _conv_stem(config.in_channels, config.stem_channels, config.stem_strides)
        self.proj = nn.Linear(config.stem_channels[-1], dim)
        self.num_positions = math.ceil(config.num_bins / math.prod(config.stem_strides))
        self.pos_embedding = nn.Parameter(torch.zeros(1, dim, self.num_positions))  # (1, D, S0)
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        self.transformer = PatchTransformer(
            dim, config.num_layers, config.num_heads, config.mlp_ratio, config.dropout, config.pool
        )

    @property
    def output_dim(self) -> int:
        return self.config.hidden_dim

    def forward(self, spectra: torch.Tensor) -> EncoderOutput:
        x = spectra.unsqueeze(1) if spectra.dim() == 2 else spectra  # (B, C, L)
        if x.dim() != 3 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected (B, L) or (B, {self.config.in_channels}, L), got {tuple(spectra.shape)}")
        x = x.to(self.proj.weight.dtype)
        if self.config.normalize_input:
            x = x / x.abs().amax(dim=(1, 2), keepdim=True).clamp(min=1e-8)
        patches = self.proj(self.stem(x).transpose(1, 2))  # (B, S, D)
        patches = patches + resample_positions(self.pos_embedding, (patches.shape[1],))
        return self.transformer(patches)
