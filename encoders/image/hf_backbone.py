"""Image backbones from transformers (ViT, ConvNeXt), built from a config with random weights.

transformers' vision models import no torchvision, unlike timm. `transformers` is imported when the encoder is
built, not when this module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from encoders.base import Encoder, EncoderOutput, register_encoder
from encoders.layers.pooling import masked_mean


@dataclass
class HFImageConfig:
    """Config of `HFImageEncoder`.

    Attributes:
        arch: "vit" (transformers `ViTModel`) or "convnext" (`ConvNextModel`).
        image_size: Input side in pixels (ViT: its position table; ConvNeXt accepts any size).
        in_channels: Image channels (1 for grey-scale micrographs).
        patch_size: ViT patch side in pixels (ConvNeXt: its stem downsampling factor).
        hidden_sizes: ViT: (width,) of every layer. ConvNeXt: the width of each stage.
        depths: ViT: (number of layers,). ConvNeXt: blocks per stage (same length as `hidden_sizes`).
        num_heads: ViT attention heads (ignored by ConvNeXt).
        pool: "cls" (ViT's CLS token; ConvNeXt's normalised global average) or "mean" over tokens.
    """

    arch: Literal["vit", "convnext"] = "convnext"
    image_size: int = 224
    in_channels: int = 1
    patch_size: int = 4
    hidden_sizes: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (3, 3, 9, 3)
    num_heads: int = 6
    pool: Literal["cls", "mean"] = "cls"


def _build_backbone(cfg: HFImageConfig) -> torch.nn.Module:
    """A randomly initialised transformers vision model for `cfg` (ConvNeXt-T widths by default)."""
    if cfg.arch == "vit":
        from transformers import ViTConfig, ViTModel

        if len(cfg.hidden_sizes) != 1 or len(cfg.depths) != 1:
            raise ValueError("arch='vit' takes one width and one depth: hidden_sizes=(D,), depths=(layers,)")
        vit = ViTConfig(
            hidden_size=cfg.hidden_sizes[0],
            num_hidden_layers=cfg.depths[0],
            num_attention_heads=cfg.num_heads,
            intermediate_size=4 * cfg.hidden_sizes[0],
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            num_channels=cfg.in_channels,
        )
        return ViTModel(vit, add_pooling_layer=False)
    if cfg.arch == "convnext":
        from transformers import ConvNextConfig, ConvNextModel

        convnext = ConvNextConfig(
            num_channels=cfg.in_channels,
            patch_size=cfg.patch_size,
            hidden_sizes=list(cfg.hidden_sizes),
            depths=list(cfg.depths),
            num_stages=len(cfg.hidden_sizes),
            image_size=cfg.image_size,
        )
        return ConvNextModel(convnext)
    raise ValueError(f"arch must be 'vit' or 'convnext', got {cfg.arch!r}")


@register_encoder(HFImageConfig)
class HFImageEncoder(Encoder):
    """Micrograph encoder on a transformers ViT or ConvNeXt (Liu et al. 2022) backbone, random weights.

    Input `(B, C, H, W)` float. Tokens: ViT patch outputs (CLS excluded) or the last ConvNeXt feature map
    flattened row-major, `(B, h * w, D)`; all valid.
    """

    modality = "image"

    def __init__(self, config: HFImageConfig) -> None:
        super().__init__(config)
        self.backbone = _build_backbone(config)

    @property
    def output_dim(self) -> int:
        return self.config.hidden_sizes[-1]

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        out = self.backbone(pixel_values=images)
        hidden = out.last_hidden_state
        if self.config.arch == "vit":
            cls, tokens = hidden[:, 0], hidden[:, 1:]  # (B, D), (B, S, D)
        else:
            cls, tokens = out.pooler_output, hidden.flatten(2).transpose(1, 2)  # (B, D), (B, h * w, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        pooled = cls if self.config.pool == "cls" else masked_mean(tokens, mask)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)
