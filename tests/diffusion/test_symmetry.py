"""Space-group templates and the projection onto them (`mmcrystal.diffusion.symmetry`): templates of known
structures, projected random states carry the template's space group, the projection is idempotent, keeps a
symmetric structure where it is and moves a slightly broken one only slightly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from mmcrystal.diffusion.processes.lattice import lattice_from_lengths_angles
from mmcrystal.diffusion.symmetry import SymmetryProjector, template_from_structure


def rocksalt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def rutile() -> Structure:  # P4_2/mnm, O on 4f (x, x, 0): one free parameter
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                     [[0, 0, 0], [0.305, 0.305, 0.0]])  # fmt: skip


def wurtzite() -> Structure:  # P6_3mc, both atoms on 2b (1/3, 2/3, z)
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0.0], [1 / 3, 2 / 3, 0.382]])  # fmt: skip


def spacegroup(structure: Structure, symprec: float = 0.01) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number()


def project(template, frac: np.ndarray, lattice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    projector = SymmetryProjector([template], torch.tensor([template.num_atoms]))
    lengths, angles = projector.project_metric(torch.tensor(lattice)[None])
    cell = lattice_from_lengths_angles(lengths, angles)
    return projector.project_coords(torch.tensor(frac), cell).numpy(), cell[0].numpy()


@pytest.mark.parametrize(("make", "number", "orbits"), [(rocksalt, 225, [1, 1]), (rutile, 136, [2, 4]),
                                                        (wurtzite, 186, [2, 2])])  # fmt: skip
def test_template_of_known_structures(make, number, orbits):
    template = template_from_structure(make(), source="x")
    assert template.spacegroup == number
    assert template.orbit_sizes == orbits  # the primitive cell: NaCl 2 atoms, rutile Ti2O4, wurtzite Zn2O2
    assert sorted(set(template.species.tolist())) == sorted({site.specie.Z for site in make()})
    # every atom is its representative moved by its operation
    for i, o in enumerate(template.orbit):
        k = template.op_of_atom[i]
        image = template.rotations[k] @ template.frac_coords[template.representative[o]] + template.translations[k]
        d = image - template.frac_coords[i]
        assert np.abs(d - np.round(d)).max() < 1e-6


def invariant_under(template, x: np.ndarray, cell: np.ndarray) -> bool:
    """Every template operation maps the atoms onto atoms of the same species and keeps the metric."""
    gram = cell @ cell.T
    for rot, trans in zip(template.rotations, template.translations, strict=True):
        if not np.allclose(rot.T @ gram @ rot, gram, atol=1e-6):
            return False
        images = x @ rot.T + trans
        d = images[:, None, :] - x[None, :, :]
        d = np.abs(d - np.round(d)).max(axis=-1)  # (n, n)
        same = template.species[:, None] == template.species[None, :]
        if not np.all((np.where(same, d, 1.0)).min(axis=1) < 1e-6):
            return False
    return True


@pytest.mark.parametrize("make", [rocksalt, rutile, wurtzite])
def test_projected_random_states_have_the_template_symmetry(make):
    template = template_from_structure(make())
    rng = np.random.default_rng(0)
    exact = checked = 0
    for _ in range(10):
        frac = rng.random((template.num_atoms, 3))
        lattice = template.lattice * (1 + 0.2 * rng.standard_normal((3, 1))) + 0.5 * rng.standard_normal((3, 3))
        x, cell = project(template, frac, lattice)
        again, cell_again = project(template, x, cell)
        assert np.abs((x - again + 0.5) % 1 - 0.5).max() < 1e-9  # idempotent
        assert np.allclose(cell @ cell.T, cell_again @ cell_again.T, atol=1e-8)
        assert invariant_under(template, x, cell)
        assert not invariant_under(template, frac, lattice)  # the raw draw had no such symmetry
        structure = Structure(cell, template.species.tolist(), x)
        if min(structure.distance_matrix[np.triu_indices(len(structure), 1)]) < 0.3:
            continue  # random draws may stack two orbits; spglib refuses overlapping atoms
        checked += 1
        exact += spacegroup(structure) == template.spacegroup  # or a supergroup at special parameter values
    assert checked >= 5 and exact >= 0.7 * checked


def test_cubic_metric_and_special_positions_go_exactly_to_their_sites():
    template = template_from_structure(rocksalt())
    rng = np.random.default_rng(1)
    x, cell = project(template, rng.random((2, 3)), rng.standard_normal((3, 3)) + 4 * np.eye(3))
    lengths = np.linalg.norm(cell, axis=1)
    assert np.allclose(lengths, lengths[0])  # fcc primitive cell: a = b = c, all angles 60 degrees
    cosines = [cell[1] @ cell[2], cell[0] @ cell[2], cell[0] @ cell[1]] / lengths[0] ** 2
    assert np.allclose(cosines, 0.5)
    assert np.allclose((x[1] - x[0]) % 1, 0.5)  # Na and Cl half a body diagonal apart, wherever the origin


def test_symmetric_structure_stays_and_broken_one_moves_little():
    template = template_from_structure(rutile())
    x, _ = project(template, template.frac_coords, template.lattice)
    assert np.abs((x - template.frac_coords + 0.5) % 1 - 0.5).max() < 1e-9
    rng = np.random.default_rng(2)
    noisy = template.frac_coords + 0.02 * rng.standard_normal(template.frac_coords.shape)
    x, _ = project(template, noisy % 1.0, template.lattice)
    moved = np.abs((x - template.frac_coords + 0.5) % 1 - 0.5).max()
    assert moved < 0.05  # the nearest symmetric configuration, not a far translate


def test_projector_leaves_untemplated_crystals_and_checks_sizes():
    template = template_from_structure(rocksalt())
    projector = SymmetryProjector([None, template], torch.tensor([3, 2]))
    frac = torch.rand(5, 3, dtype=torch.float64)
    lattice = 4 * torch.eye(3, dtype=torch.float64) + 0.3 * torch.randn(2, 3, 3, dtype=torch.float64)
    out = projector.project_coords(frac, lattice)
    assert torch.equal(out[:3], frac[:3]) and not torch.allclose(out[3:], frac[3:])
    lengths, angles = projector.project_metric(lattice)
    assert torch.allclose(lengths[0], lattice[0].norm(dim=-1))
    with pytest.raises(ValueError, match="template"):
        SymmetryProjector([template], torch.tensor([3]))
    broken = template_from_structure(rutile())
    species = broken.species.copy()
    species[np.flatnonzero(broken.orbit == broken.orbit[species == 8][0])[0]] = 7  # one O of the 4f orbit -> N
    with pytest.raises(ValueError, match="more than one element"):
        broken.with_species(species)
