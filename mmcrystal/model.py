"""`MultimodalCrystalModel`: one encoder per modality and projection heads into a shared, L2-normalised latent.

Modalities and the batch fields that feed them:

=========  ===============================  =====================================================
name       input                            encoder (``encoders/``)
=========  ===============================  =====================================================
crystal    ``batch.crystal`` (CrystalBatch)  CSPNet (default), radius graph, or CHGNet features
text       ``batch.captions`` (list[str])    transformers text model (MiniLM-L6 offline by default)
xrd        ``batch.xrd`` (B, L) 2θ grid      1-D conv stem + transformer (XRD preset)
dos        ``batch.dos`` (B, L) energy grid  1-D conv stem + transformer (DOS preset)
image      ``batch.image`` (B, 1, H, W)      plain-torch ViT (default), transformers or timm
=========  ===============================  =====================================================

Absent samples (presence mask False) are not encoded at all: only present rows go through the encoder, and the
embedding matrix holds zeros elsewhere, so a batch where a modality is missing costs nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from encoders import (
    CHGNetConfig,
    CSPNetConfig,
    EncoderOutput,
    HFImageConfig,
    RadiusGraphConfig,
    SpectrumConfig,
    TextConfig,
    TimmImageConfig,
    ViTImageConfig,
    build_encoder,
    dos_config,
    xrd_config,
)
from mmcrystal.config import config_from_dict, config_to_dict, register_config
from mmcrystal.data.batch import CrystalBatch, MultimodalBatch

__all__ = ["AlignmentModelConfig", "MultimodalCrystalModel", "ProjectionHead", "ModalityEmbedding", "MODALITIES"]

MODALITIES = ("crystal", "text", "xrd", "dos", "image")


@register_config
@dataclass
class AlignmentModelConfig:
    """Which modalities the shared latent space aligns, and how each is encoded.

    Attributes:
        modalities: Modalities to build; ``crystal`` is the anchor and must be among them.
        latent_dim: Width of the shared latent space.
        projection_hidden: Hidden width of each projection head's MLP; 0 for a single linear map.
        init_temperature: Initial softmax temperature (CLIP: 0.07); learned through ``log(1/T)``.
        max_logit_scale: Upper clamp of 1/T (CLIP: 100), so training cannot collapse the temperature.
        siglip: Use the SigLIP sigmoid loss instead of InfoNCE (adds a learned bias, initialised at -10).
        crystal: Crystal encoder config (default ``CSPNetConfig(hidden_dim=256)``).
        text: Text encoder config (default MiniLM-L6 from the offline wheel).
        xrd: XRD encoder config (default ``xrd_config(1024)``).
        dos: DOS encoder config (default ``dos_config(256)``).
        image: Micrograph encoder config (default ``ViTImageConfig()``).
    """

    modalities: list[str] = field(default_factory=lambda: ["crystal", "text"])
    latent_dim: int = 256
    projection_hidden: int = 512
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    siglip: bool = False
    crystal: CSPNetConfig | RadiusGraphConfig | CHGNetConfig | None = None
    text: TextConfig | None = None
    xrd: SpectrumConfig | None = None
    dos: SpectrumConfig | None = None
    image: ViTImageConfig | HFImageConfig | TimmImageConfig | None = None

    def encoder_config(self, modality: str) -> Any:
        defaults = {
            "crystal": CSPNetConfig,
            "text": TextConfig,
            "xrd": lambda: xrd_config(1024),
            "dos": lambda: dos_config(256),
            "image": ViTImageConfig,
        }
        return getattr(self, modality) or defaults[modality]()


class ProjectionHead(nn.Module):
    """Encoder width -> latent width, then L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512):
        super().__init__()
        if hidden:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


@dataclass
class ModalityEmbedding:
    """One modality of a batch in the shared space.

    Attributes:
        embedding: (B, latent) L2-normalised; zero rows where absent.
        present: (B,) bool.
        encoded: The encoder's output for the present rows only (tokens (P, S, D), mask, pooled), P = present.sum().
    """

    embedding: torch.Tensor
    present: torch.Tensor
    encoded: EncoderOutput | None


def _select_crystals(crystal: CrystalBatch, keep: torch.Tensor) -> CrystalBatch:
    """The crystals with keep[b] True, re-indexed."""
    atom_keep = keep[crystal.batch]
    num_atoms = crystal.num_atoms[keep]
    return CrystalBatch(
        crystal.atomic_numbers[atom_keep],
        crystal.frac_coords[atom_keep],
        crystal.lattice[keep],
        num_atoms,
        torch.repeat_interleave(torch.arange(len(num_atoms), device=num_atoms.device), num_atoms),
    )


class MultimodalCrystalModel(nn.Module):
    """Encoders + projection heads + a learnable, clamped temperature.

    Args:
        config: `AlignmentModelConfig` or its dict form (``config_to_dict``).
    """

    def __init__(self, config: AlignmentModelConfig | dict | None = None):
        super().__init__()
        config = config_from_dict(config) if isinstance(config, dict) else (config or AlignmentModelConfig())
        unknown = set(config.modalities) - set(MODALITIES)
        if unknown or "crystal" not in config.modalities:
            raise ValueError(f"modalities must include 'crystal' and come from {MODALITIES}; got {config.modalities}")
        self.config = config
        self.encoders = nn.ModuleDict({m: build_encoder(config.encoder_config(m)) for m in config.modalities})
        self.heads = nn.ModuleDict(
            {
                m: ProjectionHead(enc.output_dim, config.latent_dim, config.projection_hidden)
                for m, enc in self.encoders.items()
            }
        )
        self.log_logit_scale = nn.Parameter(torch.tensor(1.0 / config.init_temperature).log())
        self.logit_bias = nn.Parameter(torch.tensor(-10.0)) if config.siglip else None

    @property
    def modalities(self) -> list[str]:
        return list(self.config.modalities)

    def logit_scale(self) -> torch.Tensor:
        """1/T, clamped to [1, max_logit_scale] (CLIP's clamp at 100)."""
        return self.log_logit_scale.exp().clamp(1.0, self.config.max_logit_scale)

    def config_dict(self) -> dict:
        return config_to_dict(self.config)

    # ----------------------------------------------------------------------------------------- encoding
    def encode_tokens(self, modality: str, inputs: Any) -> EncoderOutput:
        """Run one modality's encoder. ``inputs``: CrystalBatch, list[str], or a (B, ...) tensor."""
        encoder = self.encoders[modality]
        if modality == "text":
            tokens = encoder.tokenize(list(inputs))
            device = self.log_logit_scale.device
            return encoder(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        return encoder(inputs)

    def encode(self, modality: str, inputs: Any) -> torch.Tensor:
        """Inputs of one modality -> (B, latent) L2-normalised embeddings."""
        return self.heads[modality](self.encode_tokens(modality, inputs).pooled)

    def _inputs(self, batch: MultimodalBatch, modality: str) -> tuple[Any, torch.Tensor]:
        n = len(batch)
        device = batch.crystal.lattice.device
        if modality == "crystal":
            return batch.crystal, torch.ones(n, dtype=torch.bool, device=device)
        if modality == "text":
            return batch.captions, batch.caption_mask.to(device)
        return getattr(batch, modality), getattr(batch, f"{modality}_mask").to(device)

    def embed_batch(self, batch: MultimodalBatch) -> dict[str, ModalityEmbedding]:
        """Every configured modality of a batch in the shared space (absent rows are skipped, embedding zero)."""
        out: dict[str, ModalityEmbedding] = {}
        for modality in self.modalities:
            inputs, present = self._inputs(batch, modality)
            embedding = torch.zeros(len(batch), self.config.latent_dim, device=present.device)
            encoded = None
            if inputs is not None and bool(present.any()):
                if modality == "crystal":
                    selected = inputs if bool(present.all()) else _select_crystals(inputs, present)
                elif modality == "text":
                    selected = [t for t, p in zip(inputs, present.tolist(), strict=True) if p]
                else:
                    selected = inputs[present]
                encoded = self.encode_tokens(modality, selected)
                projected = self.heads[modality](encoded.pooled)  # bf16 under autocast, whatever pooled's dtype
                embedding = embedding.to(projected.dtype).index_put((present.nonzero()[:, 0],), projected)
            else:
                present = torch.zeros_like(present)
            out[modality] = ModalityEmbedding(embedding, present, encoded)
        return out

    forward = embed_batch
