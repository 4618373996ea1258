"""The plain-torch periodic neighbour search against pymatgen's `Structure.get_neighbor_list`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from encoders.crystal.batch import fully_connected_edges
from encoders.crystal.neighbors import images_per_axis, minimum_image_distances, periodic_radius_graph


def _ours(structures, to_crystal_input, cutoff, **kwargs) -> tuple[list[tuple], np.ndarray]:
    """Sorted (i, j, offset) keys and distances, indices global over the batch."""
    x = to_crystal_input(structures)
    graph = periodic_radius_graph(x.frac_coords, x.lattice, x.num_atoms, cutoff, **kwargs)
    rows = torch.cat([graph.edge_index.T, graph.cell_offsets], dim=1).tolist()
    return _sorted(rows, graph.distances.numpy())


def _pymatgen(structures, cutoff) -> tuple[list[tuple], np.ndarray]:
    rows, dists, start = [], [], 0
    for s in structures:
        center, neighbor, offsets, distances = s.get_neighbor_list(cutoff)
        for c, n, o in zip(center, neighbor, np.rint(offsets).astype(int), strict=True):
            rows.append([int(c) + start, int(n) + start, *o.tolist()])
        dists.extend(distances.tolist())
        start += len(s)
    return _sorted(rows, np.asarray(dists))


def _sorted(rows: list[list[int]], distances: np.ndarray) -> tuple[list[tuple], np.ndarray]:
    order = sorted(range(len(rows)), key=lambda k: tuple(rows[k]))
    return [tuple(rows[k]) for k in order], distances[order]


def _assert_same_neighbors(structures, to_crystal_input, cutoff, **kwargs):
    keys, dists = _ours(structures, to_crystal_input, cutoff, **kwargs)
    ref_keys, ref_dists = _pymatgen(structures, cutoff)
    assert len(keys) == len(ref_keys) > 0
    assert keys == ref_keys  # same multiset of (i, j, image offset)
    np.testing.assert_allclose(dists, ref_dists, rtol=0, atol=1e-8)


@pytest.mark.parametrize("cutoff", [3.0, 6.0])
def test_matches_pymatgen_on_mp20(mp20_structures, to_crystal_input, cutoff):
    _assert_same_neighbors(mp20_structures, to_crystal_input, cutoff)


SKEWED = {
    # one atom in a 2 Å cube: every neighbour is a periodic image of itself (7 images per axis at 6 Å)
    "tiny_cube": Structure(Lattice.cubic(2.0), ["Cu"], [[0.3, 0.2, 0.1]]),
    # strongly sheared triclinic cell (plane spacing ~0.5 Å along c); coordinates outside [0, 1) on purpose
    "sheared": Structure(
        Lattice([[4.0, 0.0, 0.0], [3.8, 0.6, 0.0], [1.5, 0.9, 0.5]]),
        ["Si", "O"],
        [[0.1, 0.2, 0.3], [0.9, -0.7, 1.6]],
    ),
    # long, thin cell: neighbours come from many images along a only
    "needle": Structure(
        Lattice.from_parameters(1.7, 9.0, 9.5, 80, 100, 110), ["Li", "H"], [[0, 0, 0], [0.5, 0.4, 0.3]]
    ),
}


@pytest.mark.parametrize("name", list(SKEWED))
def test_matches_pymatgen_on_small_and_skewed_cells(name, to_crystal_input):
    _assert_same_neighbors([SKEWED[name]], to_crystal_input, cutoff=6.0)


def test_batching_and_memory_blocks_do_not_change_the_result(mp20_structures, to_crystal_input):
    structures = [*mp20_structures[:10], *SKEWED.values()]
    whole = _ours(structures, to_crystal_input, 5.0)
    blocked = _ours(structures, to_crystal_input, 5.0, max_candidates=500)  # about one crystal per block
    assert whole[0] == blocked[0]
    np.testing.assert_array_equal(whole[1], blocked[1])
    _assert_same_neighbors(structures, to_crystal_input, 5.0)


def test_images_per_axis_covers_the_cutoff():
    """A lattice point beyond the enumerated images is always farther than the cutoff."""
    lattice = torch.tensor(SKEWED["sheared"].lattice.matrix).unsqueeze(0)
    cutoff = 6.0
    n = images_per_axis(lattice, cutoff)[0]
    grid = torch.stack(torch.meshgrid(*[torch.arange(-k - 2, k + 3) for k in n.tolist()], indexing="ij"), -1)
    grid = grid.reshape(-1, 3)
    outside = (grid.abs() > n + 1).any(dim=1)  # wrapped atoms differ by < 1 cell, so margin 1
    lengths = (grid[outside].to(torch.float64) @ lattice[0]).norm(dim=1)
    assert lengths.min() > cutoff
    assert n.tolist() != [1, 1, 1]  # the sheared cell really needs more than one image somewhere


def test_distances_are_differentiable(mp20_structures, to_crystal_input):
    x = to_crystal_input(mp20_structures[:3])
    x.lattice.requires_grad_(True)
    x.frac_coords.requires_grad_(True)
    graph = periodic_radius_graph(x.frac_coords, x.lattice, x.num_atoms, 4.0)
    graph.distances.sum().backward()
    assert torch.isfinite(x.lattice.grad).all() and x.lattice.grad.abs().sum() > 0
    # isotropic scaling L -> (1 + e) L scales every distance by (1 + e): d(sum d)/de = sum d
    directional = (x.lattice.grad * x.lattice).sum()
    torch.testing.assert_close(directional, graph.distances.sum().detach())


def test_fully_connected_edges_matches_naive_loops():
    num_atoms = torch.tensor([3, 1, 0, 2])
    expected, start = [], 0
    for n in num_atoms.tolist():
        expected += [(start + i, start + j) for i in range(n) for j in range(n)]
        start += n
    assert [tuple(e) for e in fully_connected_edges(num_atoms).T.tolist()] == expected


def test_minimum_image_distances_match_pymatgen_distance_matrix(mp20_structures, to_crystal_input):
    """Every ordered pair of 20 real MP-20 crystals, any periodic image of the inputs: pymatgen's distance matrix."""
    structures = mp20_structures[:20]
    x = to_crystal_input(structures)
    edge_index = fully_connected_edges(x.num_atoms)
    receiver, sender = edge_index
    images = torch.randint(-2, 3, x.frac_coords.shape, generator=torch.Generator().manual_seed(0))
    frac = x.frac_coords.double() + images.double()  # another periodic image of every atom
    ours = minimum_image_distances(frac[sender] - frac[receiver], x.lattice.double()[x.batch[receiver]])
    expected = torch.cat([torch.as_tensor(s.distance_matrix).flatten() for s in structures])
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-6)  # 1e-6: sqrt of the clamp at self-pairs
    assert bool((ours[receiver != sender] > 0.5).all())  # real crystals: no pair closer than 0.5 Å
