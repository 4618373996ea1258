"""Micrograph encoders: plain-torch ViT, transformers ViT/ConvNeXt, and timm (optional `vision` extra)."""

from encoders.image.hf_backbone import HFImageConfig, HFImageEncoder
from encoders.image.timm_backbone import TimmImageConfig, TimmImageEncoder
from encoders.image.vit import ViTImageConfig, ViTImageEncoder

__all__ = [
    "HFImageConfig",
    "HFImageEncoder",
    "TimmImageConfig",
    "TimmImageEncoder",
    "ViTImageConfig",
    "ViTImageEncoder",
]
