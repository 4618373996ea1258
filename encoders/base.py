"""The encoder contract: the output triple, the `Encoder` base class and the config-keyed registry.

Every encoder is a plain `torch.nn.Module` built from one dataclass config through `build_encoder(cfg)`.
The config *type* picks the encoder, so a training recipe only ever holds configs:

    from encoders import CSPNetConfig, build_encoder

    encoder = build_encoder(CSPNetConfig(hidden_dim=128))
    out = encoder(crystal_batch)  # EncoderOutput(tokens (B, S, D), mask (B, S), pooled (B, D))

The same output feeds contrastive alignment (`pooled`), cross-attention fusion and diffusion conditioning
(`tokens` with `mask`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn


@dataclass
class EncoderOutput:
    """What every encoder returns.

    Attributes:
        tokens: Per-element features `(B, S, D)`: atoms for crystals, patches for spectra and images, word
            pieces for text. Rows at padded positions are exactly zero.
        mask: `(B, S)` bool, True where a token is real and False at padding.
        pooled: One vector per sample `(B, D)`, e.g. for contrastive alignment.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __post_init__(self) -> None:
        batch, length, dim = self.tokens.shape
        if self.mask.shape != (batch, length) or self.mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool {(batch, length)}, got {self.mask.dtype} {tuple(self.mask.shape)}")
        if self.pooled.shape != (batch, dim):
            raise ValueError(f"pooled must be {(batch, dim)}, got {tuple(self.pooled.shape)}")


class Encoder(nn.Module):
    """Base class of all encoders.

    Subclasses set `modality`, store their config as `self.config`, report the width of `tokens` and `pooled`
    through `output_dim`, and return an `EncoderOutput` from `forward`.

    Attributes:
        modality: One of "crystal", "spectrum", "image", "text"; tells a model which batch field to feed.
        config_type: The dataclass this encoder is built from (set by `register_encoder`).
    """

    modality: ClassVar[str] = ""
    config_type: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @property
    def output_dim(self) -> int:
        """Width D of `tokens` and `pooled`."""
        raise NotImplementedError


EncoderT = TypeVar("EncoderT", bound=type[Encoder])

_REGISTRY: dict[type, type[Encoder]] = {}


def register_encoder(config_type: type) -> Callable[[EncoderT], EncoderT]:
    """Class decorator that makes `build_encoder(config_type(...))` construct the decorated encoder."""

    def decorate(encoder_cls: EncoderT) -> EncoderT:
        if config_type in _REGISTRY and _REGISTRY[config_type] is not encoder_cls:
            raise ValueError(f"{config_type.__name__} is already registered to {_REGISTRY[config_type].__name__}")
        _REGISTRY[config_type] = encoder_cls
        encoder_cls.config_type = config_type
        return encoder_cls

    return decorate


def registered_encoders() -> dict[type, type[Encoder]]:
    """A copy of the registry: config type -> encoder class."""
    return dict(_REGISTRY)


def build_encoder(cfg: Any) -> Encoder:
    """Build the encoder registered for `type(cfg)`.

    Args:
        cfg: An encoder config dataclass instance, e.g. `CSPNetConfig()` or `TextConfig()`.

    Returns:
        A freshly initialised encoder (pretrained backbones load their weights here).

    Raises:
        TypeError: If no encoder is registered for the config's type.
    """
    encoder_cls = _REGISTRY.get(type(cfg))
    if encoder_cls is None:
        known = ", ".join(sorted(t.__name__ for t in _REGISTRY))
        raise TypeError(f"no encoder registered for {type(cfg).__name__}; known configs: {known}")
    return encoder_cls(cfg)
