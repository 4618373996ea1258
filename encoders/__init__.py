"""Pure-PyTorch encoders for crystals, spectra, micrographs and text.

Imports torch and numpy only; optional backends (chgnet + pymatgen, transformers, timm, peft) load when an
encoder that needs them is built. Every encoder is built from its config dataclass by `build_encoder(cfg)` and
returns `EncoderOutput(tokens (B, S, D), mask (B, S), pooled (B, D))`.

    >>> from encoders import CSPNetConfig, build_encoder
    >>> encoder = build_encoder(CSPNetConfig(hidden_dim=64, num_layers=2))
    >>> encoder.output_dim
    64
"""

from encoders.base import Encoder, EncoderOutput, build_encoder, register_encoder, registered_encoders
from encoders.crystal import (
    CHGNetConfig,
    CHGNetEncoder,
    CrystalGraphInput,
    CSPNetConfig,
    CSPNetEncoder,
    RadiusGraphConfig,
    RadiusGraphEncoder,
)
from encoders.image import (
    HFImageConfig,
    HFImageEncoder,
    TimmImageConfig,
    TimmImageEncoder,
    ViTImageConfig,
    ViTImageEncoder,
)
from encoders.spectrum import SpectrumConfig, SpectrumEncoder, dos_config, xrd_config
from encoders.text import LoRASettings, TextConfig, TextEncoder

__all__ = [
    "CHGNetConfig",
    "CHGNetEncoder",
    "CSPNetConfig",
    "CSPNetEncoder",
    "CrystalGraphInput",
    "Encoder",
    "EncoderOutput",
    "HFImageConfig",
    "HFImageEncoder",
    "LoRASettings",
    "RadiusGraphConfig",
    "RadiusGraphEncoder",
    "SpectrumConfig",
    "SpectrumEncoder",
    "TextConfig",
    "TextEncoder",
    "TimmImageConfig",
    "TimmImageEncoder",
    "ViTImageConfig",
    "ViTImageEncoder",
    "build_encoder",
    "dos_config",
    "register_encoder",
    "registered_encoders",
    "xrd_config",
]
