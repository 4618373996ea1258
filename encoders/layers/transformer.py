"""A pre-norm transformer over patch tokens, shared by the spectrum and image encoders."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import EncoderOutput


class TransformerStack(nn.Module):
    """Pre-LayerNorm transformer encoder layers (Vaswani et al. 2017; pre-LN: Xiong et al. 2020) + final norm.

    Args:
        dim: Token width D.
        depth: Number of layers.
        num_heads: Attention heads (must divide D).
        mlp_ratio: Feed-forward width as a multiple of D.
        dropout: Dropout inside attention and feed-forward blocks.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                num_heads,
                int(dim * mlp_ratio),
                dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, S, D); padding_mask (B, S) True at PADDING (torch's convention, the opposite of EncoderOutput.mask)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding_mask)
        return self.norm(x)


class PatchTransformer(nn.Module):
    """Optional CLS token, transformer, and pooling over patch tokens that already carry positions.

    Args:
        dim: Token width D.
        depth: Number of transformer layers.
        num_heads: Attention heads.
        mlp_ratio: Feed-forward width as a multiple of D.
        dropout: Dropout rate.
        pool: "cls" (a learned CLS token, its output is `pooled`) or "mean" (average of the patch tokens).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        dropout: float,
        pool: Literal["cls", "mean"],
    ) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        if self.cls is not None:
            nn.init.trunc_normal_(self.cls, std=0.02)
        self.stack = TransformerStack(dim, depth, num_heads, mlp_ratio, dropout)

    def forward(self, patches: torch.Tensor) -> EncoderOutput:
        batch, length, _ = patches.shape  # (B, S, D)
        x = patches
        if self.cls is not None:
            x = torch.cat([self.cls.expand(batch, -1, -1), x], dim=1)  # (B, 1 + S, D)
        x = self.stack(x)
        if self.cls is not None:
            pooled, tokens = x[:, 0], x[:, 1:]
        else:
            tokens = x
            pooled = tokens.mean(dim=1)
        mask = torch.ones(batch, length, dtype=torch.bool, device=x.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)


def resample_positions(pos: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize a learned positional grid to `size` and flatten it to tokens.

    Linear (1-D) or bilinear (2-D) interpolation, as ViT does when fine-tuning at another resolution
    (Dosovitskiy et al. 2021, sec. 3.2). For spectra this keeps position i aligned with the same fraction of the
    axis (2θ, energy) whatever the number of bins.

    Args:
        pos: Learned embedding `(1, D, *grid)` with a 1-D or 2-D grid.
        size: Target grid, same number of dimensions.

    Returns:
        `(1, prod(size), D)`.
    """
    if tuple(pos.shape[2:]) != tuple(size):
        mode = "linear" if len(size) == 1 else "bilinear"
        pos = F.interpolate(pos, size=size, mode=mode, align_corners=False)
    return pos.flatten(2).transpose(1, 2)
