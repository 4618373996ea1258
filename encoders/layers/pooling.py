"""Pooling of padded token sequences `(B, S, D)` with a validity mask `(B, S)` into `(B, D)`."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens: (B, S, D), (B, S) -> (B, D); rows with no valid token give zeros."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, S, 1)
    count = weights.sum(dim=1).clamp(min=1.0)  # (B, 1)
    return (tokens * weights).sum(dim=1) / count


class AttentionPool(nn.Module):
    """Softmax-weighted sum of valid tokens with a learned scoring vector (gated pooling, Li et al. 2016).

    Args:
        dim: Token width D.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(tokens).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, S)
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # all-masked rows -> 0, not NaN
        return torch.einsum("bs,bsd->bd", weights, tokens)


class TokenPool(nn.Module):
    """Mean or attention pooling chosen by name, so configs can say `pool: "mean"`.

    Args:
        kind: "mean" (masked average) or "attention" (`AttentionPool`).
        dim: Token width D.
    """

    def __init__(self, kind: Literal["mean", "attention"], dim: int) -> None:
        super().__init__()
        if kind not in ("mean", "attention"):
            raise ValueError(f"pool must be 'mean' or 'attention', got {kind!r}")
        self.attention = AttentionPool(dim) if kind == "attention" else None

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.attention is None:
            return masked_mean(tokens, mask)
        return self.attention(tokens, mask)
