"""PropertyPredictor: physical units, ensemble and MC-dropout uncertainty, in-process fine_tune, save/load."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mmcrystal.finetune.data import structures_to_samples
from mmcrystal.finetune.predictor import PropertyPredictor


def test_predict_returns_physical_units_and_zero_std_for_one_model(make_model, mp20_structures):
    model = make_model()
    predictor = PropertyPredictor([model])
    mean, std = predictor.predict(mp20_structures[:10], batch_size=4)
    assert predictor.property_names == ["band_gap", "band_gap>0", "energy_above_hull"]
    assert mean.shape == std.shape == (10, 3) and not std.any()
    from mmcrystal.data.batch import collate_samples

    batch = collate_samples(structures_to_samples(mp20_structures[:10]), [])
    with torch.no_grad():
        outputs = model(batch.crystal)
    # band gap: normalised output * std 2 + mean 1; binary column: a probability
    np.testing.assert_allclose(mean[:, 0], outputs[:, 0].numpy() * 2.0 + 1.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean[:, 1], torch.sigmoid(outputs[:, 1]).numpy(), rtol=1e-5, atol=1e-6)
    assert np.all((mean[:, 1] > 0) & (mean[:, 1] < 1))


def test_ensemble_std_is_the_spread_of_its_members(make_model, mp20_structures):
    members = [make_model(seed=s) for s in (0, 1, 2)]
    structures = mp20_structures[:6]
    singles = [PropertyPredictor([m]).predict(structures)[0] for m in members]
    mean, std = PropertyPredictor(members).predict(structures)
    np.testing.assert_allclose(mean, np.mean(singles, axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, np.std(singles, axis=0), rtol=1e-5, atol=1e-9)
    assert (std > 0).all()


def test_mc_dropout_gives_seeded_nonzero_std(make_model, mp20_structures):
    predictor = PropertyPredictor([make_model(dropout=0.3)], mc_samples=8)
    mean, std = predictor.predict(mp20_structures[:5])
    again, std_again = predictor.predict(mp20_structures[:5])
    assert (std[:, 0] > 0).all()
    np.testing.assert_array_equal(mean, again)
    np.testing.assert_array_equal(std, std_again)
    with pytest.raises(ValueError, match="dropout"):
        PropertyPredictor([make_model(dropout=0.0)], mc_samples=4).predict(mp20_structures[:2])


def test_fine_tune_fits_new_labels_masks_nan_and_leaves_the_original_alone(make_model, mp20_structures):
    structures = mp20_structures[:16]
    predictor = PropertyPredictor([make_model(targets=("band_gap", "energy_above_hull"), dropout=0.0)])
    before, _ = predictor.predict(structures)
    targets = np.stack([np.linspace(0.0, 4.0, 16), np.full(16, np.nan)], axis=1)  # hull energies unknown
    tuned = predictor.fine_tune(structures, targets, steps=60, lr=3e-3, seed=0, batch_size=8)
    after, _ = tuned.predict(structures)
    np.testing.assert_array_equal(predictor.predict(structures)[0], before)  # the original is unchanged
    error_before = np.abs(before[:, 0] - targets[:, 0]).mean()
    error_after = np.abs(after[:, 0] - targets[:, 0]).mean()
    assert error_after < 0.5 * error_before, (error_before, error_after)
    again = predictor.fine_tune(structures, targets, steps=60, lr=3e-3, seed=0, batch_size=8).predict(structures)[0]
    np.testing.assert_array_equal(after, again)  # deterministic given the seed
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        predictor.fine_tune(structures, targets[:, :1], steps=1)
    with pytest.raises(ValueError, match="no training sample"):
        predictor.fine_tune(structures, np.full((16, 2), np.nan), steps=1)


def test_save_and_load_an_ensemble_predicts_identically(make_model, mp20_structures, tmp_path):
    predictor = PropertyPredictor([make_model(seed=0), make_model(seed=1)])
    folders = predictor.save_pretrained(tmp_path / "ensemble")
    assert [f.name for f in folders] == ["member_0", "member_1"]
    reloaded = PropertyPredictor.from_pretrained(folders)
    for a, b in zip(predictor.predict(mp20_structures[:8]), reloaded.predict(mp20_structures[:8]), strict=True):
        np.testing.assert_array_equal(a, b)
    single = reloaded.for_target("energy_above_hull")
    mean, std = single.predict(mp20_structures[:3])
    assert mean.shape == std.shape == (3,)
    with pytest.raises(KeyError, match="formation"):
        reloaded.for_target("formation_energy_per_atom")


def test_bad_structures_and_folders_give_clear_errors(make_model, mp20_structures, tmp_path):
    from pymatgen.core import Lattice, Structure

    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="'1'.*disordered"):
        PropertyPredictor([make_model()]).predict([mp20_structures[0], disordered])
    with pytest.raises(FileNotFoundError, match="config.json"):
        PropertyPredictor.from_pretrained(tmp_path)


def test_predictor_module_imports_without_lightning():
    code = "import sys, mmcrystal.finetune.predictor; assert 'lightning' not in sys.modules, 'lightning imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
