"""Cross-attention fusion: crystal tokens attend to the tokens of text, spectra and images.

The ALBEF/BLIP recipe (Li et al. 2021, 2022): after contrastive alignment, a fusion transformer reads one
modality's tokens with cross-attention to another's, and a matching head learns whether the pair belongs together.
Negatives are mined from the contrastive similarities (hard negatives: the most similar wrong partner), which is
what makes the matching head discriminate beyond what the contrastive embeddings already separate.

The fused crystal tokens (and their pooled vector) are what the diffusion decoder and property fine-tuning can
condition on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mmcrystal.config import register_config

__all__ = ["FusionConfig", "CrossAttentionFusion", "FusedOutput", "mine_hard_negatives"]


@register_config
@dataclass
class FusionConfig:
    """Cross-attention fusion and its matching head.

    Attributes:
        dim: Width of the fusion transformer.
        num_layers: Fusion layers (self-attention over crystal tokens, cross-attention to context, MLP).
        num_heads: Attention heads.
        context: Modalities the crystal tokens attend to.
        matching_weight: Weight of the matching (ITM) loss in the total loss.
        dropout: Dropout in attention and MLP.
    """

    dim: int = 256
    num_layers: int = 2
    num_heads: int = 4
    context: list[str] = field(default_factory=lambda: ["text"])
    matching_weight: float = 1.0
    dropout: float = 0.0


@dataclass
class FusedOutput:
    """Fused crystal tokens (B, S, dim) with mask (B, S), their mean (B, dim) and match logits (B,)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    match_logit: torch.Tensor


class FusionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))

    def forward(self, x, x_mask, context, context_mask):
        # key_padding_mask is True where a position must be ignored (the opposite of our masks)
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, key_padding_mask=~x_mask, need_weights=False)[0]
        h = self.norm2(x)
        x = x + self.cross_attn(h, context, context, key_padding_mask=~context_mask, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class CrossAttentionFusion(nn.Module):
    """Crystal tokens attend to the concatenated context tokens of the other modalities.

    Args:
        config: `FusionConfig`.
        crystal_dim: Width of the crystal encoder's tokens.
        context_dims: Token width of each context modality.
    """

    def __init__(self, config: FusionConfig, crystal_dim: int, context_dims: dict[str, int]):
        super().__init__()
        self.config = config
        self.crystal_in = nn.Linear(crystal_dim, config.dim)
        self.context_in = nn.ModuleDict({m: nn.Linear(d, config.dim) for m, d in context_dims.items()})
        # a learned type embedding tells the fusion which modality each context token comes from
        self.context_type = nn.ParameterDict({m: nn.Parameter(torch.zeros(config.dim)) for m in context_dims})
        self.layers = nn.ModuleList(
            FusionLayer(config.dim, config.num_heads, config.dropout) for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.match_head = nn.Linear(config.dim, 1)

    def forward(
        self,
        crystal_tokens: torch.Tensor,
        crystal_mask: torch.Tensor,
        context: dict[str, tuple[torch.Tensor, torch.Tensor]],
    ) -> FusedOutput:
        """Fuse.

        Args:
            crystal_tokens: (B, S, Dc) and ``crystal_mask`` (B, S) bool.
            context: modality -> (tokens (B, T, Dm), mask (B, T) bool); a sample whose context is all masked
                attends to a single learned null token instead (no NaN from an empty softmax).
        """
        b = crystal_tokens.shape[0]
        parts, masks = [], []
        for modality, (tokens, mask) in context.items():
            parts.append(self.context_in[modality](tokens) + self.context_type[modality])
            masks.append(mask)
        null = self.norm.weight.new_zeros(b, 1, self.config.dim)  # (B, 1, D) always-valid null token
        ctx = torch.cat([null, *parts], dim=1)
        ctx_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=ctx.device), *masks], dim=1)
        x = self.crystal_in(crystal_tokens)
        for layer in self.layers:
            x = layer(x, crystal_mask, ctx, ctx_mask)
        x = self.norm(x) * crystal_mask.unsqueeze(-1)
        pooled = x.sum(1) / crystal_mask.sum(1, keepdim=True).clamp(min=1)
        return FusedOutput(x, crystal_mask, pooled, self.match_head(pooled).squeeze(-1))


def mine_hard_negatives(similarity: torch.Tensor, positives: torch.Tensor, generator=None) -> torch.Tensor:
    """For each row, sample a wrong partner with probability softmax(similarity) over non-positives (ALBEF).

    Args:
        similarity: (B, B) contrastive similarities (rows: anchors, columns: candidates).
        positives: (B, B) bool, True where a candidate is not a negative (itself, duplicates).
    Returns:
        (B,) column index of the chosen negative, -1 for rows with no negative available.
    """
    logits = similarity.detach().float().masked_fill(positives, float("-inf"))
    has_negative = torch.isfinite(logits).any(dim=1)
    weights = torch.softmax(logits.masked_fill(~has_negative[:, None], 0.0), dim=1)
    choice = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return torch.where(has_negative, choice, torch.full_like(choice, -1))


def matching_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the matching head."""
    return F.binary_cross_entropy_with_logits(logits, labels.float())
