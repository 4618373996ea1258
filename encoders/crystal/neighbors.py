"""Periodic neighbour search in plain torch: all (i, j, image) with |r_j + image - r_i| <= cutoff.

No pyg-lib / torch-cluster: for each crystal we enumerate every lattice translation that can hold a neighbour
within the cutoff and test all atom pairs against all of them, vectorised over the whole batch. This is exact for
any cell shape (tiny or strongly sheared cells simply get more images); its cost is
sum_b n_b^2 * prod_i (2 m_i + 1) candidate pairs, fine for cells of up to a few hundred atoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from encoders.crystal.batch import fully_connected_edges
from encoders.layers.scatter import exclusive_cumsum


@dataclass
class NeighborList:
    """Directed periodic edges; each unordered pair appears once from each side.

    Attributes:
        edge_index: `(2, E)` long, row 0 the centre atom i, row 1 the neighbour atom j (global indices).
        cell_offsets: `(E, 3)` long, integer lattice translation of j relative to the frac coords AS GIVEN:
            vector = (f_j + offset - f_i) @ lattice.
        vectors: `(E, 3)` Å, Cartesian vector from i to the image of j (differentiable w.r.t. the inputs).
        distances: `(E,)` Å, lengths of `vectors`.
    """

    edge_index: torch.Tensor
    cell_offsets: torch.Tensor
    vectors: torch.Tensor
    distances: torch.Tensor


def images_per_axis(lattice: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Images m_i needed on each side along each lattice vector to cover a sphere of radius `cutoff`.

    Atoms wrapped into [0, 1) differ by less than one cell along each axis, and a displacement with fractional
    component x_i along axis i is at least |x_i| * h_i long, where h_i = V / |a_j x a_k| is the spacing of the
    lattice planes spanned by the other two vectors. So |image_i| <= ceil(cutoff / h_i) suffices.

    Args:
        lattice: `(B, 3, 3)`, rows a, b, c in Å.
        cutoff: Radius in Å.

    Returns:
        `(B, 3)` long.
    """
    # rows: b x c, c x a, a x b (normals of the planes spanned by the other two vectors)
    normals = torch.linalg.cross(lattice[:, [1, 2, 0]], lattice[:, [2, 0, 1]])  # (B, 3, 3)
    volume = (lattice[:, 0] * normals[:, 0]).sum(-1).abs()  # (B,) Å^3
    heights = volume.unsqueeze(-1) / normals.norm(dim=-1)  # (B, 3) Å
    return torch.ceil(cutoff / heights).long()


def _image_shifts(n_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All integer shifts in [-m, m]^3 for each crystal, flat: `shifts (I, 3)` and `owner (I,)`."""
    sizes = 2 * n_images + 1  # (B, 3)
    count = sizes.prod(dim=1)  # (B,)
    owner = torch.repeat_interleave(torch.arange(count.numel(), device=count.device), count)  # (I,)
    k = torch.arange(owner.numel(), device=count.device) - exclusive_cumsum(count)[owner]
    sz = sizes[owner]  # (I, 3)
    digits = torch.stack([k // (sz[:, 1] * sz[:, 2]), (k // sz[:, 2]) % sz[:, 1], k % sz[:, 2]], dim=1)
    return digits - n_images[owner], owner


def _search_block(
    wrapped: torch.Tensor, lattice: torch.Tensor, num_atoms: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exhaustive search for one block of crystals with local atom indices (no gradients).

    Returns `edge_index (2, E)` and integer `shifts (E, 3)` relative to the wrapped coordinates.
    """
    batch = torch.repeat_interleave(torch.arange(num_atoms.numel(), device=num_atoms.device), num_atoms)
    cart = torch.einsum("ni,nij->nj", wrapped, lattice[batch])  # (n, 3) Å
    shifts, owner = _image_shifts(images_per_axis(lattice, cutoff))  # (I, 3), (I,)
    shift_cart = torch.einsum("ik,ikj->ij", shifts.to(lattice.dtype), lattice[owner])  # (I, 3) Å
    images_of = torch.bincount(owner, minlength=num_atoms.numel())  # (b,)

    pairs = fully_connected_edges(num_atoms)  # (2, P)
    per_pair = images_of[batch[pairs[0]]]  # (P,)
    cand_pair = torch.repeat_interleave(torch.arange(pairs.shape[1], device=pairs.device), per_pair)  # (C,)
    within = torch.arange(cand_pair.numel(), device=pairs.device) - exclusive_cumsum(per_pair)[cand_pair]
    cand_image = exclusive_cumsum(images_of)[batch[pairs[0, cand_pair]]] + within  # (C,)
    i, j = pairs[0, cand_pair], pairs[1, cand_pair]
    vec = cart[j] + shift_cart[cand_image] - cart[i]  # (C, 3) Å
    is_self = (i == j) & (shifts[cand_image] == 0).all(dim=1)
    keep = ((vec * vec).sum(dim=1) <= cutoff * cutoff) & ~is_self
    return torch.stack([i[keep], j[keep]]), shifts[cand_image[keep]]


def _crystal_blocks(num_atoms: torch.Tensor, n_images: torch.Tensor, max_candidates: int) -> list[tuple[int, int]]:
    """Split crystals into contiguous ranges of at most ~max_candidates candidate pairs each (memory bound)."""
    cost = (num_atoms * num_atoms * (2 * n_images + 1).prod(dim=1)).tolist()
    blocks, start, total = [], 0, 0
    for b, c in enumerate(cost):
        if total > 0 and total + c > max_candidates:
            blocks.append((start, b))
            start, total = b, 0
        total += c
    blocks.append((start, len(cost)))
    return blocks


def periodic_radius_graph(
    frac_coords: torch.Tensor,
    lattice: torch.Tensor,
    num_atoms: torch.Tensor,
    cutoff: float,
    max_candidates: int = 2_000_000,
) -> NeighborList:
    """All periodic neighbours within `cutoff` for a batch of crystals; self-pairs at zero offset excluded.

    Matches pymatgen's `Structure.get_neighbor_list(cutoff)` as a multiset of (i, j, offset, distance), up to
    pairs lying within float rounding of the cutoff.

    Args:
        frac_coords: `(N, 3)` fractional coordinates, any real values, atoms of each crystal contiguous.
        lattice: `(B, 3, 3)`, rows a, b, c in Å.
        num_atoms: `(B,)` atoms per crystal.
        cutoff: Radius in Å (inclusive).
        max_candidates: Upper bound on (pair, image) candidates held in memory at once; crystals are processed
            in blocks below it (a single larger crystal still runs as one block).

    Returns:
        A `NeighborList`; `vectors` and `distances` carry gradients to `frac_coords` and `lattice`.
    """
    with torch.no_grad():
        cell_shift = torch.floor(frac_coords)  # (N, 3) integer part, so wrapped coords lie in [0, 1)
        wrapped = frac_coords - cell_shift
        atom_start = exclusive_cumsum(num_atoms).tolist()
        n_images = images_per_axis(lattice, cutoff)
        edges, offsets = [], []
        for first, last in _crystal_blocks(num_atoms, n_images, max_candidates):
            lo = atom_start[first]
            hi = atom_start[last] if last < len(atom_start) else frac_coords.shape[0]
            block_edges, block_shifts = _search_block(
                wrapped[lo:hi], lattice[first:last], num_atoms[first:last], cutoff
            )
            edges.append(block_edges + lo)
            offsets.append(block_shifts)
        edge_index = torch.cat(edges, dim=1)
        # translate shifts of wrapped coords back to the coords as given: f_j + s - f_i = w_j + t - w_i
        shift = cell_shift.long()
        cell_offsets = torch.cat(offsets) + shift[edge_index[0]] - shift[edge_index[1]]
    vectors = edge_vectors(frac_coords, lattice, num_atoms, edge_index, cell_offsets)
    return NeighborList(edge_index, cell_offsets, vectors, vectors.norm(dim=-1))


def edge_vectors(
    frac_coords: torch.Tensor,
    lattice: torch.Tensor,
    num_atoms: torch.Tensor,
    edge_index: torch.Tensor,
    cell_offsets: torch.Tensor,
) -> torch.Tensor:
    """Cartesian edge vectors in Å, `(f_j + offset - f_i) @ lattice` -> `(E, 3)`, differentiable."""
    batch = torch.repeat_interleave(torch.arange(num_atoms.numel(), device=num_atoms.device), num_atoms)
    i, j = edge_index
    frac_vec = frac_coords[j] + cell_offsets.to(frac_coords.dtype) - frac_coords[i]  # (E, 3)
    return torch.einsum("ei,eij->ej", frac_vec, lattice[batch[i]])


# The 27 translations {-1, 0, 1}^3 searched by `minimum_image_distances`.
_NEAR_SHIFTS = torch.cartesian_prod(*[torch.tensor([-1.0, 0.0, 1.0])] * 3)  # (27, 3)


def minimum_image_distances(frac_diff: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
    """Shortest periodic distance in Å for fractional differences `(E, 3)` in cells `(E, 3, 3)` (rows Å) -> `(E,)`.

    The difference is wrapped to [-0.5, 0.5) per axis and its 27 nearest translations are searched: exact for cells
    whose reduced basis is not strongly sheared (every real MP-20 cell), and otherwise an upper bound of the true
    minimum. It depends only on f_j - f_i modulo 1 and on the Gram matrix, so it is invariant to rotations,
    translations and the choice of periodic image, like the Fourier features it complements. A fully connected
    graph's self-pairs get 0. Differentiable (the square root is taken of a clamped square, finite at 0).
    """
    wrapped = frac_diff - torch.round(frac_diff)  # (E, 3) in [-0.5, 0.5]
    shifts = _NEAR_SHIFTS.to(device=frac_diff.device, dtype=frac_diff.dtype)
    candidates = wrapped.unsqueeze(1) + shifts  # (E, 27, 3) fractional
    cartesian = torch.einsum("eki,eij->ekj", candidates, lattice)  # (E, 27, 3) Å
    squared = (cartesian * cartesian).sum(-1).min(dim=1).values  # (E,) Å^2
    return squared.clamp(min=1e-12).sqrt()
