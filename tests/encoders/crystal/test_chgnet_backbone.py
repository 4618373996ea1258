"""CHGNet backbone: tensor -> Structure conversion and the pretrained features (loading takes ~1-3 s)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders import CHGNetConfig, build_encoder
from encoders.crystal.chgnet_backbone import crystals_to_structures


def test_crystals_to_structures_round_trip(mp20_structures, to_crystal_input):
    structures = mp20_structures[:12]
    rebuilt = crystals_to_structures(to_crystal_input(structures))
    assert len(rebuilt) == len(structures)
    for original, copy in zip(structures, rebuilt, strict=True):
        assert copy.atomic_numbers == original.atomic_numbers
        np.testing.assert_allclose(copy.lattice.matrix, original.lattice.matrix, atol=1e-12)
        np.testing.assert_allclose(copy.frac_coords, original.frac_coords, atol=1e-12)


@pytest.fixture(scope="module")
def chgnet_encoder():
    return build_encoder(CHGNetConfig(freeze=True))


def test_pooled_is_chgnet_crystal_feature_per_atom(chgnet_encoder, mp20_structures, to_crystal_input):
    structures = mp20_structures[:4]
    out = chgnet_encoder(to_crystal_input(structures, dtype=torch.float32))
    assert out.tokens.shape == (4, max(len(s) for s in structures), 64)
    reference = chgnet_encoder.model.predict_structure(structures, return_crystal_feas=True, batch_size=4)
    for b, (s, pred) in enumerate(zip(structures, reference, strict=True)):
        # the shipped checkpoints read out by summing over atoms; pooled is the per-atom mean
        np.testing.assert_allclose(out.pooled[b].numpy() * len(s), pred["crystal_fea"], rtol=1e-4, atol=1e-4)


def test_frozen_backbone_has_no_gradients_and_stays_in_eval(chgnet_encoder):
    assert not any(p.requires_grad for p in chgnet_encoder.parameters())
    chgnet_encoder.train()
    assert chgnet_encoder.training and not chgnet_encoder.model.training
    chgnet_encoder.eval()


def test_rotation_and_supercell_invariance(chgnet_encoder, mp20_structures, to_crystal_input):
    from pymatgen.core import Structure

    structures = mp20_structures[:4]
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0].numpy()
    rotated = [Structure(s.lattice.matrix @ rot.T, s.species, s.frac_coords) for s in structures]
    supercells = [s.copy().make_supercell([2, 1, 1]) for s in structures]
    with torch.no_grad():
        base = chgnet_encoder(to_crystal_input(structures, dtype=torch.float32)).pooled
        turned = chgnet_encoder(to_crystal_input(rotated, dtype=torch.float32)).pooled
        bigger = chgnet_encoder(to_crystal_input(supercells, dtype=torch.float32)).pooled
    torch.testing.assert_close(turned, base, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bigger, base, rtol=1e-4, atol=1e-4)
