"""Requests -> conditions: formulas in prompts, space groups, XRD files on the model's grid, guidance scales, and
clear errors for conditions a model was not trained with."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mmcrystal.generation.conditions import (
    formula_in_prompt,
    guidance_config,
    load_xrd_pattern,
    parse_composition,
    parse_spacegroup,
    resolve_conditions,
    xrd_grid,
)
from mmcrystal.generation.model import CrystalDiffusionModel, normalization_from_manifest


@pytest.mark.parametrize(
    ("prompt", "formula"),
    [
        ("LiFePO4 in an orthorhombic cell", "LiFePO4"),
        ("A cubic crystal of NaCl with space group Fm-3m (No. 225) and 2 atoms in the unit cell.", "NaCl"),
        ("Tetragonal crystal lattice of Er5(Ge5Ir2)2 compound", "Er5(Ge5Ir2)2"),
        ("Ternary compound Tc3Se4I exhibiting monoclinic symmetry", "Tc3Se4I"),
        ("a NiAs-type FeS with hexagonal symmetry", "FeS"),
        ("the NiAs type structure of FeS.", "FeS"),
        ("an FCC metal, like BCC and HCP ones", None),  # acronyms, not F-C-C compounds
        ("In a cubic cell: a perovskite oxide ABO3", None),  # "In" alone is one element; A and B are not elements
        ("Li0.5CoO2 cathode", None),  # not whole atom counts
        ("a cubic perovskite oxide", None),
    ],
)
def test_formula_in_prompt(prompt, formula):
    found = formula_in_prompt(prompt)
    if formula is None:
        assert found is None
    else:
        assert found is not None and found.reduced_formula == parse_composition(formula).reduced_formula


def test_parse_composition_and_spacegroup():
    assert parse_composition("Sr2Ti2O6").num_atoms == 10
    for bad, match in (
        ("SrTiO2.5", "whole"),
        ("Xx2O", "not an element"),
        ("Li-O", "not a chemical formula"),
        ("UO2", "beyond"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_composition(bad, num_elements=90)
    assert [parse_spacegroup(v) for v in (225, "225", "Fm-3m", "P6_3/mmc", " Pnma ")] == [225, 225, 225, 194, 62]
    for bad in (0, 231, "Q9/zzz"):
        with pytest.raises(ValueError, match="space group"):
            parse_spacegroup(bad)


def _write_scan(path, two_theta_peaks, lo=5.0, hi=90.0, step=0.02):
    """A measured-looking .xy scan: sloping background + Gaussian peaks (counts)."""
    two_theta = np.arange(lo, hi + step / 2, step)
    counts = 300.0 + 2000.0 * np.exp(-two_theta / 15.0)
    for center, height in two_theta_peaks:
        counts += height * np.exp(-0.5 * ((two_theta - center) / 0.15) ** 2)
    path.write_text("2theta counts\n" + "\n".join(f"{x:.3f} {y:.2f}" for x, y in zip(two_theta, counts, strict=True)))
    return path


def test_xrd_file_is_background_corrected_and_resampled_onto_the_model_grid(xrd_model, tmp_path, xrd_grid_settings):
    grid_settings = xrd_grid_settings
    scan = _write_scan(tmp_path / "scan.xy", [(40.0, 3000.0), (60.0, 1500.0)])
    values = load_xrd_pattern(scan, xrd_model)
    grid = np.linspace(grid_settings["two_theta_min"], grid_settings["two_theta_max"], grid_settings["n_bins"])
    assert values.shape == (256,) and values.dtype == np.float32
    assert float(values.max()) == pytest.approx(1.0)  # max-normalised, as the training patterns
    assert abs(grid[int(values.argmax())] - 40.0) < 0.3
    assert abs(grid[int(np.argmax(np.where(np.abs(grid - 60) < 2, values, 0)))] - 60.0) < 0.3
    # background removed: the sloping 300-2000 count background would otherwise sit at 0.1-0.5 of the peak
    far_from_peaks = (np.abs(grid - 40) > 3) & (np.abs(grid - 60) > 3)
    assert float(values[far_from_peaks].max()) < 0.05
    conditions = resolve_conditions(xrd_model, xrd=str(scan), spacegroup="Fm-3m")
    assert conditions.spacegroup == 225 and conditions.xrd_source.startswith(str(scan))
    np.testing.assert_array_equal(conditions.xrd, values)


def test_xrd_errors_and_grid_fallback(xrd_model, tmp_path, normalization, caplog):
    with pytest.raises(ValueError, match="does not overlap"):
        load_xrd_pattern(_write_scan(tmp_path / "high.xy", [(85.0, 100.0)], lo=82.0, hi=89.0), xrd_model)
    with pytest.raises(ValueError, match="256 grid points"):
        resolve_conditions(xrd_model, xrd=np.ones(100))
    assert resolve_conditions(xrd_model, xrd=np.ones(256)).xrd_source.startswith("array")
    # a model trained before the grid was recorded: the pipeline's default 5-90° grid with the encoder's bins
    older = CrystalDiffusionModel(xrd_model.config)
    older.set_normalization(normalization)
    with caplog.at_level(logging.WARNING):
        grid = xrd_grid(older)
    assert (grid.two_theta_min, grid.two_theta_max, grid.n_bins) == (5.0, 90.0, 256)
    assert "does not record its XRD grid" in caplog.text


def test_normalization_records_the_xrd_grid_of_the_manifest(mp40_tiny, xrd_grid_settings):
    grid_settings = xrd_grid_settings
    from mmcrystal.data.datamodule import load_manifest

    manifest = load_manifest(str(mp40_tiny))
    assert "xrd" not in normalization_from_manifest(manifest)  # no simulated XRD in these shards
    manifest["modalities"] = {"xrd": {**grid_settings, "fwhm": 0.2, "profile": "gaussian"}}
    assert normalization_from_manifest(manifest)["xrd"] == grid_settings


def test_conditions_the_model_was_not_trained_with_raise(xrd_model, tmp_path):
    scan = _write_scan(tmp_path / "scan.xy", [(40.0, 3000.0)])
    for request, match in (
        (dict(prompt="a cubic crystal"), "not trained with 'text'"),
        (dict(properties={"band_gap": 1.0}), "not trained with 'properties'"),
    ):
        with pytest.raises(ValueError, match=match):
            resolve_conditions(xrd_model, **request)
    assert resolve_conditions(xrd_model, xrd=str(scan)).given() == ["xrd"]


def test_guidance_scales(xrd_model):
    given = ["xrd", "spacegroup"]
    joint = guidance_config(xrd_model, 2.5, given)
    assert (joint.mode, joint.scale, joint.always) == ("joint", 2.5, [])
    per = guidance_config(xrd_model, '{"xrd": 3}', given)  # JSON text as the CLI may pass it
    assert per.mode == "per_condition" and per.scales == {"xrd": 3.0, "spacegroup": 1.0}
    assert guidance_config(xrd_model, {"xrd": 0, "spacegroup": 0}, given).scales == {"xrd": 0.0, "spacegroup": 0.0}
    with pytest.raises(ValueError, match="does not know"):
        guidance_config(xrd_model, {"text": 2.0}, given)
    with pytest.raises(ValueError, match="does not give"):
        guidance_config(xrd_model, {"spacegroup": 2.0}, ["xrd"])
    with pytest.raises(ValueError, match="neither a number nor"):
        guidance_config(xrd_model, "strong", given)


def test_conditions_never_dropped_in_training_are_always_applied(normalization, tiny_parts):
    from mmcrystal.diffusion import AtomTypeConfig, DiffusionConfig
    from mmcrystal.diffusion.conditioning import ConditionConfig
    from mmcrystal.generate import DiffusionModelConfig

    denoiser, head = tiny_parts

    conditions = ConditionConfig(conditions=["composition", "spacegroup"], cond_dim=16,
                                 drop_prob={"composition": 0.0, "spacegroup": 0.2})  # fmt: skip
    csp = CrystalDiffusionModel(DiffusionModelConfig(
        denoiser=denoiser, diffusion=DiffusionConfig(types=AtomTypeConfig(fixed_composition=True)),
        conditions=conditions, num_atoms=head, normalization=normalization))  # fmt: skip
    given = resolve_conditions(csp, composition="SrTiO3", spacegroup=221).given()
    assert guidance_config(csp, 2.0, given).always == ["composition"]
    assert guidance_config(csp, {"spacegroup": 2.0}, given).scales == {"spacegroup": 2.0}
    with pytest.raises(ValueError, match="never dropped"):
        guidance_config(csp, {"composition": 2.0}, given)
    with pytest.raises(ValueError, match="crystal structure prediction"):
        resolve_conditions(csp, spacegroup=221)
