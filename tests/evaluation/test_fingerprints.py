"""Fingerprints: CrystalNN order-parameter structure fingerprint and Magpie-style composition fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
from eval_crystals import cesium_chloride
from pymatgen.analysis.local_env import CrystalNN, LocalStructOrderParams, cn_opt_params
from pymatgen.core import Composition
from pymatgen.core.operations import SymmOp

from mmcrystal.evaluation.fingerprints import (
    COMPOSITION_PROPERTIES,
    COMPOSITION_STATS,
    STRUCTURE_FP_LENGTH,
    composition_fingerprint,
    site_fingerprint,
    structure_fingerprint,
)


def _one_object_per_motif(structure, index):
    """Reference: matminer's 'ops' layout with one LocalStructOrderParams per motif (no grouping, no caching)."""
    nn = CrystalNN().get_nn_data(structure, index)
    out = [nn.cn_weights.get(cn, 0.0) for cn in range(1, 25)]
    for cn in range(1, 13):
        motifs = [("sgl_bd", None)] if cn == 1 else []
        motifs += [(m[0], m[1] if len(m) > 1 else None) for m in cn_opt_params.get(cn, {}).values()]
        motifs += [(q, None) for q in ("q2", "q4", "q6")] if cn >= 9 else []
        for op_type, params in motifs:
            w = nn.cn_weights.get(cn, 0.0)
            if w == 0.0:
                out.append(0.0)
                continue
            neigh = [d["site"] for d in nn.cn_nninfo[cn]]
            op = LocalStructOrderParams([op_type], parameters=[params])
            value = op.get_order_parameters([structure[index], *neigh], 0, indices_neighs=list(range(1, cn + 1)))[0]
            out.append(w * (value or 0.0))
    return np.array(out)


@pytest.mark.filterwarnings("ignore")
def test_site_fingerprint_equals_per_motif_reference(mp20_structures):
    for structure in mp20_structures[:6]:
        for index in range(min(len(structure), 4)):
            assert np.allclose(site_fingerprint(structure, index), _one_object_per_motif(structure, index))


@pytest.mark.filterwarnings("ignore")
def test_symmetry_shortcut_gives_the_site_average(mp20_structures):
    for structure in mp20_structures[6:10]:
        fast = structure_fingerprint(structure, symprec=0.01)
        slow = structure_fingerprint(structure, symprec=None)
        assert fast.shape == (STRUCTURE_FP_LENGTH,)
        assert np.abs(fast - slow).max() < 2e-3


@pytest.mark.filterwarnings("ignore")
def test_structure_fingerprint_is_invariant_and_discriminates(nacl):
    rotated = nacl.copy()
    rotated.apply_operation(SymmOp.from_axis_angle_and_translation([1, 2, 3], 37))
    supercell = nacl.copy()
    supercell.make_supercell([1, 2, 1])
    base = structure_fingerprint(nacl)
    assert np.allclose(structure_fingerprint(rotated), base, atol=1e-6)
    assert np.allclose(structure_fingerprint(supercell), base, atol=1e-6)
    assert base[5] == pytest.approx(1.0)  # rock salt: every site six-fold coordinated
    assert np.linalg.norm(structure_fingerprint(cesium_chloride()) - base) > 0.4  # 8-fold vs 6-fold


def test_composition_fingerprint_layout_and_values():
    fp = composition_fingerprint(Composition("NaCl"))
    assert fp.shape == (len(COMPOSITION_PROPERTIES) * len(COMPOSITION_STATS),)
    assert np.allclose(fp, composition_fingerprint(Composition("Na4Cl4")))  # depends on fractions only
    table = fp.reshape(len(COMPOSITION_PROPERTIES), len(COMPOSITION_STATS))
    number = table[COMPOSITION_PROPERTIES.index("Number")]
    assert list(number) == pytest.approx([11, 17, 6, 14, 3, 11])  # min, max, range, mean, avg_dev, mode (tie -> min)
    valence = table[COMPOSITION_PROPERTIES.index("NValence")]
    assert valence[0] == 1 and valence[1] == 7  # Na 3s1, Cl 3s2 3p5
    assert np.isfinite(composition_fingerprint(Composition("XeF2"))).all()  # noble-gas gaps are filled
    assert not np.allclose(composition_fingerprint(Composition("Fe2O3")), composition_fingerprint(Composition("FeO")))


def test_pb_valence_counts_follow_magpie():
    table = composition_fingerprint(Composition("Pb")).reshape(len(COMPOSITION_PROPERTIES), -1)[:, 0]
    values = dict(zip(COMPOSITION_PROPERTIES, table, strict=True))
    assert (values["NsValence"], values["NpValence"], values["NdValence"], values["NfValence"]) == (2, 2, 10, 14)
    assert values["NValence"] == 28 and values["NpUnfilled"] == 4 and values["NUnfilled"] == 4
