"""Any timm image model as a backbone (optional `vision` extra: timm needs a matching torchvision)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from encoders.base import Encoder, EncoderOutput, register_encoder
from encoders.layers.pooling import masked_mean

_MISSING_TIMM = (
    "TimmImageEncoder needs timm, which imports torchvision. Install a torchvision that matches your torch, "
    "then the `vision` extra: pip install 'mmcrystal[vision]'. Without it use ViTImageConfig or HFImageConfig."
)


@dataclass
class TimmImageConfig:
    """Config of `TimmImageEncoder`.

    Attributes:
        model_name: A timm architecture name, e.g. "convnext_nano", "vit_small_patch16_224", "resnet18".
        pretrained: Load timm's pretrained weights (needs the network or a populated HF cache).
        in_channels: Image channels; timm adapts the stem (summing pretrained RGB filters for 1 channel).
        pool: "head" (timm's own pooled pre-logits features) or "mean" over tokens.
    """

    model_name: str = "convnext_nano"
    pretrained: bool = False
    in_channels: int = 1
    pool: Literal["head", "mean"] = "head"


@register_encoder(TimmImageConfig)
class TimmImageEncoder(Encoder):
    """A timm backbone: `forward_features` gives tokens, `forward_head(pre_logits=True)` the pooled vector.

    CNN feature maps `(B, D, h, w)` are flattened row-major to `(B, h * w, D)`; ViT-style outputs `(B, S, D)`
    are used as they are (their prefix tokens included). Raises ImportError naming the `vision` extra when
    timm is not installed.
    """

    modality = "image"

    def __init__(self, config: TimmImageConfig) -> None:
        super().__init__(config)
        try:
            import timm
        except ImportError as err:
            raise ImportError(_MISSING_TIMM) from err
        self.backbone = timm.create_model(
            config.model_name, pretrained=config.pretrained, in_chans=config.in_channels, num_classes=0
        )

    @property
    def output_dim(self) -> int:
        return int(self.backbone.num_features)

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        features = self.backbone.forward_features(images)
        tokens = features.flatten(2).transpose(1, 2) if features.dim() == 4 else features  # (B, S, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if self.config.pool == "head":
            pooled = self.backbone.forward_head(features, pre_logits=True)
        else:
            pooled = masked_mean(tokens, mask)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)
