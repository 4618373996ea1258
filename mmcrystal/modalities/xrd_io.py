"""Readers for measured powder patterns and their preparation for the model's 2theta grid.

Formats:
- two/three columns (``.xy``, ``.xye``, ``.txt``, ``.dat``): ``2theta intensity [esd]`` per line, separated by
  spaces, tabs, commas or semicolons; ``#`` starts a comment; one line of column names may open the file.
- ``start step end`` header followed by intensities, any number per line (GSAS/Rietveld "free format" style).
- CIF powder data (IUCr pdCIF): a loop with ``_pd_meas_2theta_scan`` or ``_pd_proc_2theta_corrected`` (or the
  2theta grid from ``_pd_meas_2theta_range_min/max/inc``, also ``_pd_proc_2theta_range_*``) and one of
  ``_pd_proc_intensity_total``, ``_pd_meas_counts_total``, ``_pd_meas_intensity_total``; values may carry esds,
  ``123(4)``. DDL2 names with a dot (``_pd_meas.2theta_scan``) are accepted too.

A file that cannot be read raises ``PatternFormatError`` naming the file and the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mmcrystal.modalities.scattering import wavelength_angstrom
from mmcrystal.modalities.xrd import XRDConfig

_SEPARATORS = re.compile(r"[\s,;]+")
_NUMBER_ESD = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?:\((\d+)\))?$")
_X_TAGS = ("_pd_proc_2theta_corrected", "_pd_meas_2theta_scan", "_pd_meas_2theta_corrected")
_Y_TAGS = ("_pd_proc_intensity_total", "_pd_meas_counts_total", "_pd_meas_intensity_total")


class PatternFormatError(ValueError):
    """A measured-pattern file that cannot be read; the message starts with ``path:line:``."""

    def __init__(self, path, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


@dataclass
class MeasuredPattern:
    """A measured powder pattern.

    Attributes:
        two_theta: (M,) strictly increasing 2theta, degrees.
        intensity: (M,) counts or arbitrary units.
        esd: (M,) standard uncertainties, or None.
        source: file the pattern came from.
        wavelength: Å, when the file states it (CIF ``_diffrn_radiation_wavelength``), else None.
    """

    two_theta: np.ndarray
    intensity: np.ndarray
    esd: np.ndarray | None = None
    source: str = ""
    wavelength: float | None = None


def _data_lines(path: Path):
    """(line number, tokens) of non-empty lines with ``#`` comments removed."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.split("#", 1)[0].strip()
            if text:
                yield number, [t for t in _SEPARATORS.split(text) if t]


def _to_floats(tokens: list[str], path, line: int) -> list[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise PatternFormatError(path, line, f"expected numbers, got {' '.join(tokens)!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise PatternFormatError(path, line, "non-finite value")
    return values


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _finish(two_theta, intensity, esd, path, lines) -> MeasuredPattern:
    """Check monotonic 2theta (reverse a decreasing scan) and build the pattern."""
    tt, y = np.asarray(two_theta, float), np.asarray(intensity, float)
    e = None if esd is None else np.asarray(esd, float)
    if tt.size < 2:
        raise PatternFormatError(path, None, f"needs at least 2 data points, found {tt.size}")
    if np.all(np.diff(tt) < 0):
        tt, y, e, lines = tt[::-1], y[::-1], None if e is None else e[::-1], lines[::-1]
    bad = np.flatnonzero(np.diff(tt) <= 0)
    if bad.size:
        raise PatternFormatError(path, lines[bad[0] + 1], "2theta is not strictly increasing")
    if e is not None and np.any(e < 0):
        raise PatternFormatError(path, lines[int(np.flatnonzero(e < 0)[0])], "negative esd")
    return MeasuredPattern(tt, y, e, str(path))


def read_xy(path: str | Path) -> MeasuredPattern:
    """Two or three columns: 2theta (degrees), intensity, optional esd."""
    path = Path(path)
    rows, lines = [], []
    for number, tokens in _data_lines(path):
        if not rows and not lines and not any(_is_number(t) for t in tokens):
            lines.append(None)  # one header line of column names, before any data
            continue
        values = _to_floats(tokens, path, number)
        if len(values) not in (2, 3):
            raise PatternFormatError(path, number, f"expected 2 or 3 columns, found {len(values)}")
        if rows and len(values) != len(rows[0]):
            raise PatternFormatError(path, number, f"expected {len(rows[0])} columns like the first data line")
        rows.append(values)
        lines.append(number)
    data = np.asarray(rows, float).reshape(len(rows), -1) if rows else np.zeros((0, 2))
    esd = data[:, 2] if data.shape[1] == 3 else None
    return _finish(data[:, 0], data[:, 1], esd, path, [n for n in lines if n is not None])


def read_start_step_end(path: str | Path) -> MeasuredPattern:
    """A ``start step end`` header (2theta degrees) followed by the intensities."""
    path = Path(path)
    header, values, lines = None, [], []
    for number, tokens in _data_lines(path):
        numbers = _to_floats(tokens, path, number)
        if header is None:
            if len(numbers) != 3:
                raise PatternFormatError(path, number, f"expected a 'start step end' header, got {tokens}")
            header = (number, *numbers)
            continue
        values += numbers
        lines += [number] * len(numbers)
    if header is None:
        raise PatternFormatError(path, None, "empty file")
    number, start, step, end = header
    if not (step > 0 and end > start):
        raise PatternFormatError(path, number, f"need step > 0 and end > start, got {start} {step} {end}")
    expected = int(round((end - start) / step)) + 1
    if abs((end - start) / step + 1 - expected) > 1e-6 * expected or len(values) != expected:
        raise PatternFormatError(path, number, f"header implies {expected} intensities, found {len(values)}")
    return _finish(start + step * np.arange(expected), values, None, path, lines)


def _cif_tokens(path: Path):
    """(line, token) pairs of a CIF: comments dropped, quoted strings and ;-text fields kept as one token."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(";"):  # multi-line text field
            start, i = i + 1, i + 1
            while i < len(lines) and not lines[i].startswith(";"):
                i += 1
            if i == len(lines):
                raise PatternFormatError(path, start, "unterminated ';' text field")
            yield start, "\n".join(lines[start - 1 : i])
            i += 1
            continue
        for match in re.finditer(r"'([^']*)'(?=\s|$)|\"([^\"]*)\"(?=\s|$)|(#.*)|(\S+)", line):
            if match.group(3) is None:
                yield i + 1, next(g for g in match.groups() if g is not None)
        i += 1


def _parse_cif(path: Path) -> tuple[dict, list[tuple[list[str], list[tuple[int, str]]]]]:
    """Items ``{tag: (line, value)}`` and loops ``[(tags, [(line, value), ...])]`` of the first data block."""
    items, loops, tokens = {}, [], list(_cif_tokens(path))
    blocks, i = 0, 0
    while i < len(tokens):
        line, tok = tokens[i]
        low = tok.lower()
        if low.startswith("data_"):
            blocks += 1
            if blocks > 1 and (items or loops):
                break
            i += 1
        elif low == "loop_":
            tags, i = [], i + 1
            while i < len(tokens) and tokens[i][1].startswith("_"):
                tags.append(tokens[i][1].lower().replace(".", "_"))
                i += 1
            values = []
            while i < len(tokens) and not tokens[i][1].startswith("_") and tokens[i][1].lower() not in ("loop_",):
                if tokens[i][1].lower().startswith("data_"):
                    break
                values.append(tokens[i])
                i += 1
            if not tags or len(values) % len(tags):
                raise PatternFormatError(path, line, f"loop with {len(tags)} tags has {len(values)} values")
            loops.append((tags, values))
        elif tok.startswith("_"):
            if i + 1 >= len(tokens):
                raise PatternFormatError(path, line, f"tag {tok} has no value")
            items[low.replace(".", "_")] = tokens[i + 1]
            i += 2
        else:
            raise PatternFormatError(path, line, f"unexpected token {tok!r}")
    return items, loops


def _cif_number(entry: tuple[int, str], path) -> tuple[float, float | None]:
    """Value and esd of a CIF number such as ``12.34(5)`` (esd 0.05)."""
    line, text = entry
    match = _NUMBER_ESD.match(text)
    if not match:
        raise PatternFormatError(path, line, f"expected a number, got {text!r}")
    value, esd_digits = match.groups()
    if esd_digits is None:
        return float(value), None
    decimals = len(value.split(".")[1].split("e")[0].split("E")[0]) if "." in value else 0
    return float(value), int(esd_digits) * 10.0**-decimals


def read_cif_pattern(path: str | Path) -> MeasuredPattern:
    """Powder data from a pdCIF (module docstring)."""
    path = Path(path)
    items, loops = _parse_cif(path)
    for tags, values in loops:
        y_tag = next((t for t in _Y_TAGS if t in tags), None)
        if y_tag is None:
            continue
        rows = [values[i : i + len(tags)] for i in range(0, len(values), len(tags))]
        y = [_cif_number(r[tags.index(y_tag)], path) for r in rows]
        lines = [r[tags.index(y_tag)][0] for r in rows]
        x_tag = next((t for t in _X_TAGS if t in tags), None)
        if x_tag is not None:
            tt = [_cif_number(r[tags.index(x_tag)], path)[0] for r in rows]
        else:
            tt = _cif_range(items, len(rows), path, lines[0])
        esd = None if any(e is None for _, e in y) else [e for _, e in y]
        if esd is None and y_tag == "_pd_meas_counts_total":
            esd = [math.sqrt(max(v, 0.0)) for v, _ in y]  # counting statistics
        pattern = _finish(tt, [v for v, _ in y], esd, path, lines)
        wave = items.get("_diffrn_radiation_wavelength")
        return replace(pattern, wavelength=_cif_number(wave, path)[0] if wave else None)
    raise PatternFormatError(path, None, f"no powder intensity loop (one of {', '.join(_Y_TAGS)})")


def _cif_range(items: dict, n_points: int, path, line: int) -> np.ndarray:
    for prefix in ("_pd_meas_2theta_range_", "_pd_proc_2theta_range_"):
        keys = [prefix + k for k in ("min", "max", "inc")]
        if all(k in items for k in keys):
            lo, hi, inc = (_cif_number(items[k], path)[0] for k in keys)
            expected = int(round((hi - lo) / inc)) + 1 if inc > 0 else -1
            if expected != n_points:
                raise PatternFormatError(path, line, f"2theta range gives {expected} points, loop has {n_points}")
            return lo + inc * np.arange(n_points)
    raise PatternFormatError(path, line, "intensity loop without 2theta column or _pd_meas_2theta_range_min/max/inc")


def read_pattern(path: str | Path, fmt: str | None = None) -> MeasuredPattern:
    """Read a measured pattern; ``fmt`` is ``"xy"``, ``"start_step_end"``, ``"cif"`` or None (guess).

    The guess: ``.cif`` is CIF; ``.xy``/``.xye`` are columns; otherwise columns, and if that fails a
    ``start step end`` file.
    """
    path = Path(path)
    fmt = fmt or {".cif": "cif", ".xy": "xy", ".xye": "xy"}.get(path.suffix.lower())
    readers = {"xy": read_xy, "start_step_end": read_start_step_end, "cif": read_cif_pattern}
    if fmt is not None:
        if fmt not in readers:
            raise ValueError(f"unknown pattern format {fmt!r}; expected one of {sorted(readers)}")
        return readers[fmt](path)
    try:
        return read_xy(path)
    except PatternFormatError as columns_error:
        try:
            return read_start_step_end(path)
        except PatternFormatError:
            raise columns_error from None


def convert_wavelength(pattern: MeasuredPattern, wavelength: str | float) -> MeasuredPattern:
    """Re-express 2theta for another wavelength at the same d-spacings (Bragg: sin(theta') = lambda'/lambda sin(theta)).

    Points beyond the limiting sphere of the new wavelength are dropped. Needs ``pattern.wavelength``.
    """
    if pattern.wavelength is None:
        raise ValueError(f"{pattern.source}: the pattern's wavelength is unknown; set MeasuredPattern.wavelength")
    sin_new = wavelength_angstrom(wavelength) / pattern.wavelength * np.sin(np.radians(pattern.two_theta) / 2.0)
    keep = sin_new < 1.0
    esd = None if pattern.esd is None else pattern.esd[keep]
    two_theta = 2.0 * np.degrees(np.arcsin(sin_new[keep]))
    return replace(
        pattern,
        two_theta=two_theta,
        intensity=pattern.intensity[keep],
        esd=esd,
        wavelength=wavelength_angstrom(wavelength),
    )


def snip_background(intensity: np.ndarray, half_width: int, lls: bool = True, decreasing: bool = False) -> np.ndarray:
    """SNIP background estimate (Ryan et al., Nucl. Instrum. Methods B 34, 396 (1988)).

    Each pass p = 1..half_width replaces y_i by min(y_i, (y_{i-p} + y_{i+p}) / 2); with ``lls`` the clipping runs
    on the log-log-square-root transform v = ln(ln(sqrt(y + 1) + 1) + 1), which flattens intense peaks;
    ``decreasing`` runs p from half_width down to 1 (Morhac et al., Nucl. Instrum. Methods A 401, 113 (1997)).

    Args:
        intensity: (M,) pattern on an even grid (negative values are treated as 0).
        half_width: largest clipping half-window in grid points, a bit above the widest peak's half-width.

    Returns:
        (M,) background, <= the input.
    """
    y = np.clip(np.asarray(intensity, float), 0.0, None)
    v = np.log(np.log(np.sqrt(y + 1.0) + 1.0) + 1.0) if lls else y.copy()
    widths = range(half_width, 0, -1) if decreasing else range(1, half_width + 1)
    for p in widths:
        if 2 * p >= len(v):
            continue
        v[p:-p] = np.minimum(v[p:-p], 0.5 * (v[: -2 * p] + v[2 * p :]))
    if lls:
        v = (np.exp(np.exp(v) - 1.0) - 1.0) ** 2 - 1.0
    return np.minimum(v, y)


def rolling_min_background(intensity: np.ndarray, half_width: int) -> np.ndarray:
    """Rolling-minimum background: a moving minimum, then a moving average of it (morphological opening-like).

    Args:
        intensity: (M,) pattern on an even grid.
        half_width: half-window in grid points, larger than the widest peak's half-width.

    Returns:
        (M,) background, <= the input.
    """
    y = np.asarray(intensity, float)
    window = 2 * half_width + 1
    padded = np.pad(y, half_width, mode="edge")
    minimum = np.lib.stride_tricks.sliding_window_view(padded, window).min(-1)  # (M,)
    smooth = np.convolve(np.pad(minimum, half_width, mode="edge"), np.ones(window) / window, mode="valid")
    return np.minimum(smooth, y)


def remove_background(pattern: MeasuredPattern, method: str = "snip", half_width_deg: float = 1.5) -> MeasuredPattern:
    """Subtract a background (``"snip"`` or ``"rolling_min"``) whose window is ``half_width_deg`` 2theta degrees."""
    step = float(np.median(np.diff(pattern.two_theta)))
    half_width = max(1, int(math.ceil(half_width_deg / step)))
    estimators = {"snip": snip_background, "rolling_min": rolling_min_background}
    if method not in estimators:
        raise ValueError(f"unknown background method {method!r}; expected one of {sorted(estimators)}")
    background = estimators[method](pattern.intensity, half_width)
    return replace(pattern, intensity=np.clip(pattern.intensity - background, 0.0, None))


def resample(pattern: MeasuredPattern, config: XRDConfig) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation onto the config's 2theta grid; zero outside the measured range.

    Returns:
        ``(values, mask)``: (n_bins,) float32 intensities and (n_bins,) bool, True where the grid point lies inside
        the measured range.
    """
    grid = np.linspace(config.two_theta_min, config.two_theta_max, config.n_bins)
    mask = (grid >= pattern.two_theta[0]) & (grid <= pattern.two_theta[-1])
    values = np.interp(grid, pattern.two_theta, pattern.intensity) * mask
    return values.astype(np.float32), mask


def normalize_intensity(values: np.ndarray, mode: str = "max") -> np.ndarray:
    """Scale to maximum 1 (``"max"``) or 100 (``"max100"``), as ``XRDConfig.normalization``; ``"none"``: as is."""
    if mode not in ("max", "max100", "none"):
        raise ValueError(f"unknown normalisation {mode!r}")
    top = float(np.max(values)) if np.size(values) else 0.0
    if mode == "none" or top <= 0:
        return values
    return values / top * (100.0 if mode == "max100" else 1.0)


def load_measured_pattern(
    path: str | Path,
    config: XRDConfig | None = None,
    background: str | None = "snip",
    half_width_deg: float = 1.5,
    fmt: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a file and prepare it like simulated patterns: background removal, resampling, normalisation.

    If the file states a wavelength different from the config's, 2theta is converted to the config's wavelength.

    Returns:
        ``(values, mask)`` on the config's grid, see ``resample``.
    """
    config = config or XRDConfig()
    pattern = read_pattern(path, fmt)
    if pattern.wavelength is not None and abs(pattern.wavelength - config.wavelength_angstrom) > 1e-5:
        pattern = convert_wavelength(pattern, config.wavelength)
    if background is not None:
        pattern = remove_background(pattern, background, half_width_deg)
    values, mask = resample(pattern, config)
    return normalize_intensity(values, config.normalization).astype(np.float32), mask
