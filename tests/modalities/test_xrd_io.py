"""Readers for measured powder patterns, resampling, normalisation and background removal."""

from __future__ import annotations

import numpy as np
import pytest

from mmcrystal.modalities.xrd import XRDConfig
from mmcrystal.modalities.xrd_io import (
    MeasuredPattern,
    PatternFormatError,
    convert_wavelength,
    load_measured_pattern,
    normalize_intensity,
    read_cif_pattern,
    read_pattern,
    read_start_step_end,
    read_xy,
    remove_background,
    resample,
    rolling_min_background,
    snip_background,
)


def _synthetic(n=801, lo=10.0, hi=50.0):
    """Two Gaussian peaks on a sloping background; returns (2theta, peaks, background)."""
    tt = np.linspace(lo, hi, n)
    peaks = 500 * np.exp(-0.5 * ((tt - 25) / 0.1) ** 2) + 200 * np.exp(-0.5 * ((tt - 38) / 0.15) ** 2)
    background = 100 + 2.0 * (tt - lo) + 30 * np.exp(-(tt - lo) / 8)
    return tt, peaks, background


def test_read_xy_and_xye(tmp_path):
    path = tmp_path / "p.xy"
    path.write_text("# measured on a lab diffractometer\n2theta intensity\n10.0 5\n10.5, 7  # inline\n\n11.0\t9\n")
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta, [10.0, 10.5, 11.0])
    np.testing.assert_allclose(pattern.intensity, [5, 7, 9])
    assert pattern.esd is None and pattern.source.endswith("p.xy")
    xye = tmp_path / "p.xye"
    xye.write_text("12 3 0.5\n11 2 0.4\n10 1 0.3\n")  # a decreasing scan is reversed
    pattern = read_pattern(xye)
    np.testing.assert_allclose(pattern.two_theta, [10, 11, 12])
    np.testing.assert_allclose(pattern.esd, [0.3, 0.4, 0.5])


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("10 1\n11 x\n", 2, "expected numbers"),
        ("10 1\n11 2 3\n", 2, "columns like the first"),
        ("10 1 2 3\n", 1, "2 or 3 columns"),
        ("10 1\n12 1\n11 1\n", 3, "not strictly increasing"),
        ("10 1\n11 nan\n", 2, "non-finite"),
        ("10 1 -1\n11 1 1\n", 1, "negative esd"),
    ],
)
def test_bad_xy_files_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.xy"
    path.write_text(text)
    with pytest.raises(PatternFormatError, match=rf"bad\.xy:{line}: .*{message}"):
        read_xy(path)


def test_start_step_end(tmp_path):
    path = tmp_path / "scan.dat"
    path.write_text("# header comment\n5.0 0.5 7.0\n1 2 3\n4 5\n")
    pattern = read_pattern(path)  # columns fail, so the header format is tried
    np.testing.assert_allclose(pattern.two_theta, [5.0, 5.5, 6.0, 6.5, 7.0])
    np.testing.assert_allclose(pattern.intensity, [1, 2, 3, 4, 5])
    path.write_text("5.0 0.5 7.0\n1 2 3\n")
    with pytest.raises(PatternFormatError, match=r"scan\.dat:1: header implies 5 intensities, found 3"):
        read_start_step_end(path)
    path.write_text("5.0 -0.5 7.0\n1 2 3\n")
    with pytest.raises(PatternFormatError, match="step > 0"):
        read_pattern(path, fmt="start_step_end")


_CIF_LOOP = """data_sample
_diffrn_radiation_wavelength 1.540560
_pd_meas_number_of_points 4
loop_
_pd_meas.2theta_scan
_pd_meas_counts_total
_pd_proc_intensity_bkg_calc
  10.00  100(10)  5
  10.02  121(11)  5
  10.04  '144'  5
# comment inside the loop
  10.06  169(13)  5
"""

_CIF_RANGE = """data_range
_pd_meas_2theta_range_min 20.0
_pd_meas_2theta_range_max 20.3
_pd_meas_2theta_range_inc 0.1
_pd_proc_info_data_reduction
;
multi-line text with loop_ and _tags inside
;
loop_
_pd_proc_intensity_total
 1.5(1) 2.5(1) 3.5(2) 4.5(1)
"""


def test_cif_powder_loops(tmp_path):
    path = tmp_path / "a.cif"
    path.write_text(_CIF_LOOP)
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta, [10.0, 10.02, 10.04, 10.06])
    np.testing.assert_allclose(pattern.intensity, [100, 121, 144, 169])
    np.testing.assert_allclose(pattern.esd, [10, 11, 12, 13])  # esd(144) from counting statistics
    assert pattern.wavelength == pytest.approx(1.54056)
    path.write_text(_CIF_RANGE)
    pattern = read_cif_pattern(path)
    np.testing.assert_allclose(pattern.two_theta, [20.0, 20.1, 20.2, 20.3])
    np.testing.assert_allclose(pattern.esd, [0.1, 0.1, 0.2, 0.1])


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (_CIF_LOOP.replace("121(11)", "abc"), 9, "expected a number"),
        (_CIF_LOOP.replace("  10.06  169(13)  5\n", "  10.06  169(13)\n"), 4, "3 tags has 11 values"),
        (_CIF_RANGE.replace("0.3\n", "0.5\n"), 11, "range gives 6 points"),
        ("data_x\n_cell_length_a 4.0\n", None, "no powder intensity loop"),
        ("data_x\n;\nunterminated\n", 2, "unterminated"),
    ],
)
def test_bad_cif_files_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.cif"
    path.write_text(text)
    where = rf"bad\.cif:{line}" if line is not None else r"bad\.cif"
    with pytest.raises(PatternFormatError, match=rf"{where}: .*{message}"):
        read_pattern(path)


def test_resample_masks_outside_and_normalises():
    pattern = MeasuredPattern(np.array([20.0, 30.0, 40.0]), np.array([0.0, 10.0, 20.0]))
    config = XRDConfig(two_theta_min=10.0, two_theta_max=50.0, n_bins=9)
    values, mask = resample(pattern, config)
    np.testing.assert_array_equal(mask, [False, False, True, True, True, True, True, False, False])
    np.testing.assert_allclose(values, [0, 0, 0, 5, 10, 15, 20, 0, 0])
    assert values.dtype == np.float32
    np.testing.assert_allclose(normalize_intensity(values).max(), 1.0)
    np.testing.assert_allclose(normalize_intensity(values, "max100").max(), 100.0)
    assert normalize_intensity(np.zeros(3)).max() == 0.0


@pytest.mark.parametrize("estimator", [snip_background, rolling_min_background])
def test_background_estimators_recover_a_smooth_background(estimator):
    tt, peaks, background = _synthetic()
    estimate = estimator(peaks + background, half_width=40)  # 40 points = 2 degrees
    assert np.all(estimate <= peaks + background + 1e-9)
    far_from_peaks = (np.abs(tt - 25) > 1) & (np.abs(tt - 38) > 1) & (tt > 12) & (tt < 48)
    assert np.abs(estimate - background)[far_from_peaks].max() < 8.0  # 8 % of the background level
    corrected = peaks + background - estimate
    assert corrected[np.argmin(np.abs(tt - 25))] > 0.9 * 500  # peaks survive


def test_load_measured_pattern_end_to_end(tmp_path):
    tt, peaks, background = _synthetic()
    path = tmp_path / "m.xy"
    np.savetxt(path, np.c_[tt, peaks + background], header="synthetic")
    config = XRDConfig(two_theta_min=5.0, two_theta_max=60.0, n_bins=1101)
    values, mask = load_measured_pattern(path, config)
    grid = np.linspace(5, 60, 1101)
    assert values.max() == pytest.approx(1.0)
    assert abs(grid[values.argmax()] - 25.0) < 0.06
    assert not mask[grid < 9.99].any() and mask[(grid > 10.01) & (grid < 49.99)].all()
    assert np.all(values[~mask] == 0)
    raw, _ = load_measured_pattern(path, config, background=None)
    assert raw[(grid > 12) & (grid < 20)].min() > 0.15  # the background is still there


def test_convert_wavelength_keeps_d_spacings():
    pattern = MeasuredPattern(np.array([10.0, 30.0, 150.0]), np.ones(3), wavelength=0.70930)
    cu = convert_wavelength(pattern, "CuKa1")
    assert len(cu.two_theta) == 2  # 150 degrees with Mo is beyond the Cu limiting sphere
    d_mo = 0.70930 / (2 * np.sin(np.radians(pattern.two_theta[:2] / 2)))
    d_cu = 1.54056 / (2 * np.sin(np.radians(cu.two_theta / 2)))
    np.testing.assert_allclose(d_cu, d_mo)
    with pytest.raises(ValueError, match="wavelength is unknown"):
        convert_wavelength(MeasuredPattern(pattern.two_theta, pattern.intensity), "CuKa")


def test_remove_background_rejects_unknown_method():
    tt, peaks, background = _synthetic(n=201)
    pattern = MeasuredPattern(tt, peaks + background)
    assert remove_background(pattern, "rolling_min").intensity.min() >= 0
    with pytest.raises(ValueError, match="unknown background"):
        remove_background(pattern, "polynomial")
