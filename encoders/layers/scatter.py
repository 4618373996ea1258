"""Segment (scatter) reductions and padding in plain torch (`index_add_`, `scatter_reduce`).

These replace torch-scatter / torch-geometric helpers, which do not install on the CPU machines here. `index` is
a long tensor that assigns each row of `src` to one of `dim_size` segments (atoms of a crystal, edges of an atom).
"""

from __future__ import annotations

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of `src` (E, ...) into `dim_size` segments -> (dim_size, ...)."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Mean of rows of `src` (E, ...) per segment -> (dim_size, ...); empty segments give zeros."""
    total = scatter_sum(src, index, dim_size)
    count = torch.bincount(index, minlength=dim_size).clamp(min=1).to(src.dtype)
    return total / count.view(-1, *([1] * (src.dim() - 1)))


def exclusive_cumsum(counts: torch.Tensor) -> torch.Tensor:
    """Start offset of each segment given segment sizes: [3, 2, 4] -> [0, 3, 5]."""
    return torch.cumsum(counts, 0) - counts


def to_padded(x: torch.Tensor, segment: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter flat rows into a zero-padded batch.

    Args:
        x: Flat features `(N, D)`, rows of each segment contiguous and in order.
        segment: Segment of each row `(N,)`, sorted.
        counts: Rows per segment `(B,)`.

    Returns:
        `padded (B, S, D)` with zero rows at padding, and `mask (B, S)` bool, True at real rows; S = max count.
    """
    batch_size = counts.numel()
    max_len = int(counts.max()) if batch_size > 0 else 0
    position = torch.arange(x.shape[0], device=x.device) - exclusive_cumsum(counts)[segment]  # (N,)
    padded = x.new_zeros((batch_size, max_len, *x.shape[1:]))
    padded = padded.index_put((segment, position), x)
    mask = torch.zeros(batch_size, max_len, dtype=torch.bool, device=x.device)
    mask[segment, position] = True
    return padded, mask
