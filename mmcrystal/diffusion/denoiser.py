"""`CrystalDenoiser`: a periodic, permutation-equivariant CSPNet-like network (DiffCSP, Jiao et al. 2023, sec. 4.1)
with a sinusoidal time embedding, FiLM on a pooled condition vector and cross-attention to condition tokens.

Symmetries (tested in tests/diffusion/test_denoiser.py):
  - rotation/reflection invariance: the lattice enters only through its Gram matrix L L^T;
  - translation invariance: fractional coordinates enter only through Fourier features of differences f_j - f_i
    (and, with `distance_rbf`, the minimum-image distance in Å), which also makes the choice of periodic image
    irrelevant; the coordinate score is in addition centred (zero mean per crystal), matching the centred
    score-matching loss of `WrappedNormalProcess`;
  - permutation equivariance: shared weights, mean aggregation over all atom pairs, per-atom cross-attention.
The network is only the network: no noise schedule, no loss, no sampling loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from encoders.crystal.batch import fully_connected_edges
from encoders.crystal.cspnet import CSPLayer
from encoders.crystal.neighbors import minimum_image_distances
from encoders.layers.basis import FourierFeatures, GaussianRBF
from encoders.layers.mlp import MLP
from encoders.layers.scatter import scatter_mean, to_padded
from mmcrystal.config import register_config
from mmcrystal.diffusion.condition import Condition
from mmcrystal.diffusion.processes.wrapped_normal import center_per_crystal
from mmcrystal.diffusion.state import DenoiserOutput, NoisyCrystal

__all__ = ["CrystalDenoiser", "DenoiserConfig", "sinusoidal_time_embedding"]

# Upper triangle of the symmetric 3x3 Gram matrix: (aa, ab, ac, bb, bc, cc).
_GRAM_ROWS = (0, 0, 0, 1, 1, 2)
_GRAM_COLS = (0, 1, 2, 1, 2, 2)


@register_config
@dataclass
class DenoiserConfig:
    """Config of `CrystalDenoiser`.

    Attributes:
        hidden_dim: Width D of atom features.
        num_layers: Message-passing layers (each followed by FiLM and, if enabled, cross-attention).
        num_freqs: Fourier frequencies K per fractional-coordinate difference (3 * 2K edge features).
        time_dim: Width of the sinusoidal time embedding before its MLP.
        num_classes: Element classes of the type head (Z 1..num_classes); the input also has a [MASK] class.
        lattice_dim: Width k of the lattice output (6 for `LatticeProcess`).
        cond_dim: Width of the condition tokens `(B, T, cond_dim)`.
        num_heads: Cross-attention heads (must divide hidden_dim).
        cross_attention: Attend to condition tokens after every layer; False leaves FiLM as the only conditioning.
        max_atoms: Size of the atom-count embedding (larger counts share the last entry).
        lattice_scale: Length in Å; Gram entries (Å^2) are divided by its square so they are O(1).
        dropout: Dropout in cross-attention.
        distance_rbf: Gaussians of each pair's minimum-image distance (Å) added to the edge features; 0 (default,
            DiffCSP's CSPNet and older models) gives Fourier features of f_j - f_i only. Why: from those and the
            Gram matrix a network must itself compose how far apart two atoms are in Å, the quantity that decides
            whether they overlap (< 0.5 Å makes a sample structurally invalid).
        distance_cutoff: Largest Gaussian centre in Å (the centres are evenly spaced from 0).
    """

    hidden_dim: int = 256
    num_layers: int = 6
    num_freqs: int = 16
    time_dim: int = 128
    num_classes: int = 100
    lattice_dim: int = 6
    cond_dim: int = 256
    num_heads: int = 4
    cross_attention: bool = True
    max_atoms: int = 128
    lattice_scale: float = 10.0
    dropout: float = 0.0
    distance_rbf: int = 0
    distance_cutoff: float = 6.0


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Transformer-style sin/cos features of `t (B,)` in [0, 1] (scaled to 0..1000 like DDPM steps) -> `(B, dim)`."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / half)  # (half,)
    angles = scale * t.unsqueeze(-1) * freqs  # (B, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class ConditionedBlock(nn.Module):
    """CSPLayer message passing, then FiLM from the crystal context, then cross-attention to condition tokens.

    Args:
        dim: Atom feature width D.
        edge_dim: Width of the fixed edge features.
        num_heads: Attention heads.
        cross_attention: Whether to include the cross-attention sub-block.
        dropout: Attention dropout.
    """

    def __init__(self, dim: int, edge_dim: int, num_heads: int, cross_attention: bool, dropout: float) -> None:
        super().__init__()
        self.message = CSPLayer(dim, edge_dim)
        self.film = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.film.weight)  # starts as the identity
        nn.init.zeros_(self.film.bias)
        self.attn_norm = nn.LayerNorm(dim) if cross_attention else None
        self.attn = (
            nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True) if cross_attention else None
        )

    def forward(
        self,
        h: torch.Tensor,
        noisy: NoisyCrystal,
        edges: tuple[torch.Tensor, torch.Tensor],
        context: torch.Tensor,
        cond: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        # h (N, D); context (B, D); cond tokens (B, 1 + T, D) with key mask (B, 1 + T) True where valid
        h = self.message(h, *edges)
        scale, shift = self.film(context).chunk(2, dim=-1)  # (B, D) each
        h = h * (1.0 + scale[noisy.batch]) + shift[noisy.batch]
        if self.attn is None:
            return h
        query, atom_mask = to_padded(self.attn_norm(h), noisy.batch, noisy.num_atoms)  # (B, S, D), (B, S)
        tokens, token_mask = cond
        attended = self.attn(query, tokens, tokens, key_padding_mask=~token_mask, need_weights=False)[0]
        return h + attended[atom_mask]  # back to (N, D): padded rows are in atom order


class CrystalDenoiser(nn.Module):
    """Predicts the coordinate score, the lattice eps/x_0 and the type logits of a `NoisyCrystal` at time t.

    Args:
        config: `DenoiserConfig`.
    """

    def __init__(self, config: DenoiserConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DenoiserConfig()
        dim = cfg.hidden_dim
        self.type_embedding = nn.Embedding(cfg.num_classes + 1, dim)  # + [MASK]
        self.count_embedding = nn.Embedding(cfg.max_atoms + 1, dim)
        self.time_mlp = MLP(cfg.time_dim, dim, dim, num_layers=2)
        self.gram_mlp = MLP(len(_GRAM_ROWS), dim, dim, num_layers=2)
        self.cond_pool_mlp = MLP(cfg.cond_dim, dim, dim, num_layers=2)
        self.cond_proj = nn.Linear(cfg.cond_dim, dim)
        self.null_token = nn.Parameter(torch.zeros(1, 1, dim))  # always attendable: no empty softmax
        nn.init.normal_(self.null_token, std=0.02)
        self.fourier = FourierFeatures(cfg.num_freqs)
        if cfg.distance_rbf < 0 or cfg.distance_cutoff <= 0:
            raise ValueError(
                f"distance_rbf must be >= 0 and distance_cutoff > 0 Å, got {cfg.distance_rbf} and {cfg.distance_cutoff}"
            )
        self.distance_basis = GaussianRBF(cfg.distance_rbf, cfg.distance_cutoff) if cfg.distance_rbf > 0 else None
        edge_dim = len(_GRAM_ROWS) + 3 * self.fourier.output_dim_per_input + cfg.distance_rbf
        self.blocks = nn.ModuleList(
            ConditionedBlock(dim, edge_dim, cfg.num_heads, cfg.cross_attention, cfg.dropout)
            for _ in range(cfg.num_layers)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.coord_head = MLP(dim, dim, 3, num_layers=2)
        self.type_head = MLP(dim, dim, cfg.num_classes, num_layers=2)
        self.lattice_head = MLP(2 * dim, dim, cfg.lattice_dim, num_layers=2)

    def _gram_features(self, lattice: torch.Tensor) -> torch.Tensor:
        """Upper-triangle Gram entries `(B, 6)`, divided by lattice_scale^2 (rotation invariant)."""
        gram = lattice @ lattice.transpose(1, 2)  # (B, 3, 3) Å^2
        return gram[:, _GRAM_ROWS, _GRAM_COLS] / self.config.lattice_scale**2

    def _edges(self, noisy: NoisyCrystal, gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        edge_index = fully_connected_edges(noisy.num_atoms)  # (2, sum n^2): receiver i, sender j
        receiver, sender = edge_index
        frac_diff = noisy.frac_coords[sender] - noisy.frac_coords[receiver]  # (E, 3), translation invariant
        parts = [gram[noisy.batch[receiver]], self.fourier(frac_diff)]
        if self.distance_basis is not None:
            cells = noisy.lattice[noisy.batch[receiver]].to(frac_diff.dtype)  # (E, 3, 3) Å
            parts.append(self.distance_basis(minimum_image_distances(frac_diff, cells)))
        return edge_index, torch.cat(parts, dim=-1).to(self.null_token.dtype)

    def _condition(self, cond: Condition | None, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> pooled condition `(B, cond_dim)`, key tokens `(B, 1 + T, D)` and key mask `(B, 1 + T)`."""
        null = self.null_token.expand(batch_size, -1, -1)
        valid = torch.ones(batch_size, 1, dtype=torch.bool, device=null.device)
        if cond is None:
            pooled = null.new_zeros(batch_size, self.config.cond_dim)
            return pooled, null, valid
        tokens = torch.cat([null, self.cond_proj(cond.tokens.to(null.dtype))], dim=1)
        return cond.pooled().to(null.dtype), tokens, torch.cat([valid, cond.mask], dim=1)

    def forward(self, noisy: NoisyCrystal, t: torch.Tensor, cond: Condition | None = None) -> DenoiserOutput:
        """Denoise.

        Args:
            noisy: The noisy batch (`types` may hold the [MASK] class `num_classes`).
            t: `(B,)` diffusion time in [0, 1] per crystal.
            cond: Condition tokens of the B crystals, or None (unconditional).

        Returns:
            `DenoiserOutput(coords (N, 3), lattice (B, k), types (N, num_classes))`.
        """
        cfg = self.config
        b = noisy.num_crystals
        dtype = self.null_token.dtype
        gram = self._gram_features(noisy.lattice.to(dtype))  # (B, 6)
        pooled, tokens, token_mask = self._condition(cond, b)
        counts = noisy.num_atoms.clamp(max=cfg.max_atoms)
        context = (
            self.time_mlp(sinusoidal_time_embedding(t.to(dtype), cfg.time_dim))
            + self.count_embedding(counts)
            + self.gram_mlp(gram)
            + self.cond_pool_mlp(pooled)
        )  # (B, D)
        edges = self._edges(noisy, gram)
        h = self.type_embedding(noisy.types) + context[noisy.batch]  # (N, D)
        for block in self.blocks:
            h = block(h, noisy, edges, context, (tokens, token_mask))
        h = self.final_norm(h)
        coords = center_per_crystal(self.coord_head(h), noisy.batch, b)  # (N, 3) zero mean per crystal
        crystal_h = scatter_mean(h, noisy.batch, dim_size=b)  # (B, D)
        lattice = self.lattice_head(torch.cat([crystal_h, context], dim=-1))  # (B, k)
        return DenoiserOutput(coords=coords, lattice=lattice, types=self.type_head(h))
