"""SchNet-style continuous-filter convolutions on a periodic radius graph (Schütt et al. 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from encoders.base import Encoder, EncoderOutput, register_encoder
from encoders.crystal.batch import CrystalLike, check_crystal_input
from encoders.crystal.neighbors import periodic_radius_graph
from encoders.layers.basis import BesselRBF, GaussianRBF, cosine_cutoff
from encoders.layers.mlp import MLP
from encoders.layers.pooling import TokenPool
from encoders.layers.scatter import scatter_sum, to_padded


@dataclass
class RadiusGraphConfig:
    """Config of `RadiusGraphEncoder`.

    Attributes:
        hidden_dim: Width D of atom features, tokens and the pooled vector.
        num_layers: Number of interaction (continuous-filter convolution) blocks.
        cutoff: Neighbour radius in Å; messages fade smoothly to zero at it.
        num_radial: Number of radial basis functions of the distance.
        radial_basis: "gaussian" (SchNet) or "bessel" (DimeNet).
        max_atomic_number: Largest atomic number Z the type embedding accepts.
        avg_neighbors: Constant that neighbour sums are divided by to keep activations O(1); about the mean
            number of neighbours within `cutoff` (~30-60 at 6 Å for inorganic crystals). A constant, not a
            per-atom count, so that it does not break any invariance.
        pool: "mean" over atoms or "attention" (learned softmax weights); both are supercell invariant.
        max_candidates: Memory bound of the neighbour search (see `periodic_radius_graph`).
    """

    hidden_dim: int = 128
    num_layers: int = 3
    cutoff: float = 6.0
    num_radial: int = 32
    radial_basis: Literal["gaussian", "bessel"] = "gaussian"
    max_atomic_number: int = 118
    avg_neighbors: float = 40.0
    pool: Literal["mean", "attention"] = "mean"
    max_candidates: int = 2_000_000


class InteractionBlock(nn.Module):
    """h_i += MLP(sum_j x_j * W(d_ij) * C(d_ij) / avg_neighbors), x = Linear(h) (SchNet, Schütt et al. 2018).

    Args:
        dim: Atom feature width.
        num_radial: Width of the radial basis input of the filter network.
        avg_neighbors: Normalising constant of the neighbour sum.
    """

    def __init__(self, dim: int, num_radial: int, avg_neighbors: float) -> None:
        super().__init__()
        self.filter_net = MLP(num_radial, dim, dim, num_layers=2)
        self.in_proj = nn.Linear(dim, dim, bias=False)
        self.update = MLP(dim, dim, dim, num_layers=2)
        self.avg_neighbors = avg_neighbors

    def forward(
        self, h: torch.Tensor, edge_index: torch.Tensor, radial: torch.Tensor, envelope: torch.Tensor
    ) -> torch.Tensor:
        # h (N, D); edge_index (2, E) centre i, neighbour j; radial (E, K); envelope (E,) in [0, 1]
        center, neighbor = edge_index
        filters = self.filter_net(radial) * envelope.unsqueeze(-1)  # (E, D)
        messages = self.in_proj(h)[neighbor] * filters  # (E, D)
        aggregated = scatter_sum(messages, center, dim_size=h.shape[0]) / self.avg_neighbors  # (N, D)
        return h + self.update(aggregated)


@register_encoder(RadiusGraphConfig)
class RadiusGraphEncoder(Encoder):
    """Invariant message passing over periodic neighbours within a cutoff, for cells of any size.

    Atoms exchange messages with every periodic image of every atom within `cutoff` Å, filtered by a radial
    basis of the distance times a smooth cosine envelope. Only interatomic distances enter, so the output is
    invariant to rotations, reflections, translations, permutations and the choice of unit cell: in a supercell
    every atom has exactly the same neighbourhood as in the primitive cell, so per-atom features repeat and the
    mean-pooled vector is unchanged. Distances alone do not distinguish mirror images (chirality) and, with
    one-body messages, some distinct geometries (no angles; cf. DimeNet for angular terms).

    The neighbour search is `encoders.crystal.neighbors.periodic_radius_graph` (plain torch, exact for small
    and skewed cells). Input: any object with the `CrystalGraphInput` attributes; tokens are per-atom features
    padded to `(B, max_atoms, D)`.
    """

    modality = "crystal"

    def __init__(self, config: RadiusGraphConfig) -> None:
        super().__init__(config)
        dim = config.hidden_dim
        if config.radial_basis == "gaussian":
            self.radial = GaussianRBF(config.num_radial, config.cutoff)
        elif config.radial_basis == "bessel":
            self.radial = BesselRBF(config.num_radial, config.cutoff)
        else:
            raise ValueError(f"radial_basis must be 'gaussian' or 'bessel', got {config.radial_basis!r}")
        self.atom_embedding = nn.Embedding(config.max_atomic_number + 1, dim)
        self.blocks = nn.ModuleList(
            InteractionBlock(dim, config.num_radial, config.avg_neighbors) for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.pool = TokenPool(config.pool, dim)

    @property
    def output_dim(self) -> int:
        return self.config.hidden_dim

    def forward(self, crystals: CrystalLike) -> EncoderOutput:
        check_crystal_input(crystals)
        cfg = self.config
        graph = periodic_radius_graph(
            crystals.frac_coords, crystals.lattice, crystals.num_atoms, cfg.cutoff, cfg.max_candidates
        )
        dtype = self.atom_embedding.weight.dtype
        distances = graph.distances.to(dtype)  # (E,) Å
        radial = self.radial(distances)  # (E, K)
        envelope = cosine_cutoff(distances, cfg.cutoff)  # (E,)
        h = self.atom_embedding(crystals.atomic_numbers)  # (N, D)
        for block in self.blocks:
            h = block(h, graph.edge_index, radial, envelope)
        h = self.final_norm(h)
        tokens, mask = to_padded(h, crystals.batch, crystals.num_atoms)  # (B, S, D), (B, S)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=self.pool(tokens, mask))
