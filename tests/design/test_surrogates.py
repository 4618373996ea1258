"""Surrogates: the ridge ensemble learns a composition property with calibrated-looking uncertainty and adapts
in `fine_tune`; the PropertyPredictor adapter loads lazily and delegates; both satisfy `PropertyModel`."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from design_toys import ionic_binary

from mmcrystal.design.surrogates import PretrainedPropertyModel, PropertyModel, RidgeEnsemble


def _electronegativity_gap(structure) -> float:
    """A composition property the features can express: spread of Pauling electronegativities."""
    values = [el.X for el in structure.composition.elements]
    return max(values) - min(values)


@pytest.fixture(scope="module")
def binaries():
    rng = np.random.default_rng(0)
    return [ionic_binary(rng, 1.0) for _ in range(120)]


def test_ridge_ensemble_learns_and_reports_uncertainty(binaries):
    y = np.array([[_electronegativity_gap(s), np.nan if i % 3 == 0 else len(s)] for i, s in enumerate(binaries)])
    model = RidgeEnsemble(["chi_gap", "num_atoms"], members=6, alpha=1.0, include_structure=True, seed=0)
    model.fit(binaries[:90], y[:90])
    assert isinstance(model, PropertyModel)
    mean, std = model.predict(binaries[90:])
    assert mean.shape == std.shape == (30, 2) and (std > 0).all()
    truth = y[90:, 0]
    r2 = 1 - np.sum((mean[:, 0] - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert r2 > 0.9
    errors = np.abs(mean[:, 0] - truth) / std[:, 0]
    assert np.median(errors) < 2.0  # the std is of the size of the error (out-of-bag residuals included)


def test_fine_tune_moves_predictions_towards_new_labels(binaries):
    y = np.array([[_electronegativity_gap(s)] for s in binaries])
    model = RidgeEnsemble(["chi_gap"], members=4, seed=1).fit(binaries[:60], y[:60])
    new, shifted = binaries[60:90], y[60:90] + 2.0  # the "oracle" disagrees by +2
    before = model.predict(new)[0]
    tuned = model.fine_tune(new, shifted, steps=10, lr=1e-3, seed=0)
    after = tuned.predict(new)[0]
    assert np.mean(np.abs(after - shifted)) < np.mean(np.abs(before - shifted))
    assert np.array_equal(model.predict(new)[0], before)  # fine_tune returns a new model
    assert np.array_equal(tuned.predict(new)[0], model.fine_tune(new, shifted, 10, 1e-3, 0).predict(new)[0])


def test_too_few_labels_raise(binaries):
    with pytest.raises(ValueError, match="labelled"):
        RidgeEnsemble(["x"]).fit(binaries[:5], np.array([[1.0], [np.nan], [np.nan], [np.nan], [2.0]]))


def test_pretrained_adapter_is_lazy_and_delegates(monkeypatch, binaries):
    loaded = []

    class FakePredictor:
        property_names = ["band_gap"]

        def __init__(self, offset=0.0):
            self.offset = offset

        @classmethod
        def from_pretrained(cls, path, mc_samples=0):
            loaded.append(path)
            return cls()

        def predict(self, structures):
            return np.full((len(structures), 1), 1.0 + self.offset), np.full((len(structures), 1), 0.1)

        def fine_tune(self, structures, targets, steps, lr, seed):
            return FakePredictor(float(np.nanmean(targets)) - 1.0)

    module = types.ModuleType("mmcrystal.finetune.predictor")
    module.PropertyPredictor = FakePredictor
    monkeypatch.setitem(sys.modules, "mmcrystal.finetune.predictor", module)
    adapter = PretrainedPropertyModel(["a", "b"])
    assert loaded == [] and isinstance(adapter, PropertyModel)
    assert adapter.property_names == ["band_gap"] and loaded == [["a", "b"]]
    tuned = adapter.fine_tune(binaries[:3], np.array([[3.0], [3.0], [3.0]]), steps=5, lr=1e-3, seed=0)
    assert np.allclose(tuned.predict(binaries[:2])[0], 3.0) and np.allclose(adapter.predict(binaries[:2])[0], 1.0)
    assert np.allclose(adapter.predict(binaries[:2])[1], 0.1)  # the model's own spread
    # a residual sigma is added in quadrature, and survives fine-tuning
    calibrated = PretrainedPropertyModel("c", residual_std={"band_gap": 0.3})
    assert np.allclose(calibrated.predict(binaries[:2])[1], np.hypot(0.1, 0.3))
    tuned = calibrated.fine_tune(binaries[:3], np.array([[3.0], [3.0], [3.0]]), steps=5, lr=1e-3, seed=0)
    assert np.allclose(tuned.predict(binaries[:2])[1], np.hypot(0.1, 0.3))
    with pytest.raises(ValueError, match="residual_std"):
        PretrainedPropertyModel("d", residual_std={"e_form": 0.1}).predict(binaries[:1])


def test_pretrained_adapter_without_the_finetune_package_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "mmcrystal.finetune.predictor", None)  # import fails
    with pytest.raises(ImportError, match="PropertyPredictor"):
        _ = PretrainedPropertyModel("some/folder").property_names
