"""Electronic density of states (DOS): readers and a fixed-grid preprocessing for the DOS encoder.

Readers return a ``DensityOfStates`` (energies in eV on the source's absolute scale, densities (S, M) in
states/eV per cell with S = 1 total or S = 2 spin up/down, and the Fermi level E_F in eV):

- pymatgen ``Dos`` / ``CompleteDos`` JSON, the Materials Project format (``read_pymatgen_dos_json``);
- vasprun.xml through pymatgen's ``Vasprun(...).complete_dos`` (``read_vasprun_dos``; no POTCAR read);
- text with two columns (energy, dos) or three (energy, spin up, spin down), whitespace or comma separated,
  ``#`` comments and an optional ``# efermi = <eV>`` line (``read_two_column_dos``). A spin-down column
  written as negative numbers (a plotting convention) is flipped. VASP DOSCAR files are not this format
  (their third column is the integrated DOS): read vasprun.xml instead;
- the Materials Project API (``fetch_mp_dos``), which needs the optional ``mp-api`` package and an API key.

Preprocessing (``preprocess_dos``, settings in ``DOSConfig``): shift energies to E - E_F, sum (or pick) spins,
resample by linear interpolation onto ``dos_energy_grid`` (default 256 points from -10 to 10 eV, ends
included; zero outside the source's energy range), optional Gaussian smoothing with sigma in eV (applied on a
grid padded by 4 sigma so the window edges see the states just outside), then normalisation ("area": the
trapezoid integral over the window is 1, values in 1/eV; "max": the peak is 1). Linear interpolation of a
source sampled more finely than the grid can miss narrow peaks; set ``smoothing`` to about one grid step to
avoid aliasing.

Absent DOS. None of the shared development datasets carries full DOS curves: aflow_sp_metals_dos_fermi holds
only 7 undocumented numbers near E_F (``dos_fermi``), which are not a DOS on an energy grid. The pipeline must
treat DOS as absent there (a ``None`` and a false presence mask), never as zeros or as a curve rebuilt from
those numbers: ``dos_from_mapping`` returns None for such records and ``dos_or_none`` passes None through.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

_EFERMI_COMMENT = re.compile(r"(?:efermi|e_fermi|e_f|fermi)\s*[:=]\s*([-+0-9.eE]+)", re.IGNORECASE)


class DOSFileError(ValueError):
    """A DOS file that cannot be used; the message names the file (and line) and the reason."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {reason}")
        self.path, self.line, self.reason = str(path), line, reason


@dataclass
class DOSConfig:
    """Fixed-grid DOS preprocessing.

    Attributes:
        e_min: Lower end of the energy window in eV (relative to E_F when ``shift_to_fermi``).
        e_max: Upper end of the window in eV.
        n_points: Number of grid points (ends included).
        shift_to_fermi: Use E - E_F (True) or the source's absolute energies (False).
        spin: "sum" (total DOS), "up" or "down" (the latter two need a spin-polarised source).
        smoothing: Gaussian sigma in eV (0 disables smoothing).
        normalize: "area" (integral over the window = 1), "max" (peak = 1) or "none" (states/eV).
    """

    e_min: float = -10.0
    e_max: float = 10.0
    n_points: int = 256
    shift_to_fermi: bool = True
    spin: Literal["sum", "up", "down"] = "sum"
    smoothing: float = 0.0
    normalize: Literal["area", "max", "none"] = "area"


@dataclass
class DensityOfStates:
    """A raw DOS curve as read from a source.

    Attributes:
        energies: (M,) eV, strictly increasing, on the source's scale.
        densities: (S, M) states/eV; S = 1 (total) or 2 (spin up, spin down).
        efermi: Fermi level in eV on the same scale as ``energies``.
        source: Where it came from (file name or material id).
    """

    energies: np.ndarray
    densities: np.ndarray
    efermi: float
    source: str = ""


def dos_from_pymatgen(dos, source: str = "") -> DensityOfStates:
    """Convert a pymatgen ``Dos`` / ``CompleteDos`` (its total DOS) to a ``DensityOfStates``."""
    from pymatgen.electronic_structure.core import Spin

    spins = [Spin.up, Spin.down] if Spin.down in dos.densities else [Spin.up]
    densities = np.stack([np.asarray(dos.densities[s], dtype=np.float64) for s in spins])  # (S, M)
    return DensityOfStates(np.asarray(dos.energies, dtype=np.float64), densities, float(dos.efermi), source)


def _pymatgen_dos_from_dict(data: Mapping):
    from pymatgen.electronic_structure.dos import CompleteDos, Dos

    if "pdos" in data and "structure" in data:
        return CompleteDos.from_dict(data)
    return Dos.from_dict(data)


def read_pymatgen_dos_json(path: str | Path) -> DensityOfStates:
    """Read a pymatgen ``Dos`` / ``CompleteDos`` ``as_dict()`` JSON file (``.json`` or ``.json.gz``)."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DOSFileError(path, f"not valid JSON ({err})") from None
    dos = dos_from_mapping(data, source=str(path)) if isinstance(data, Mapping) else None
    if dos is None:
        raise DOSFileError(path, "no DOS found (expected a pymatgen Dos dict with 'energies' and 'densities')")
    _check_dos(dos, path)
    return dos


def dos_from_mapping(entry: Mapping, source: str = "") -> DensityOfStates | None:
    """A full DOS from a record or JSON mapping, or None when it holds none.

    Accepts a pymatgen Dos/CompleteDos dict, or one under the key "dos", "total_dos" or "complete_dos".
    Scalar descriptors such as AFLOW's ``dos_fermi`` (7 numbers near E_F) are not a DOS: they give None.
    """
    if "energies" in entry and "densities" in entry:
        try:
            return dos_from_pymatgen(_pymatgen_dos_from_dict(entry), source)
        except (KeyError, TypeError, ValueError) as err:
            raise DOSFileError(source or "<mapping>", f"malformed pymatgen DOS dict ({err!r})") from None
    for key in ("dos", "total_dos", "complete_dos"):
        if isinstance(entry.get(key), Mapping):
            return dos_from_mapping(entry[key], source)
    return None


def read_vasprun_dos(path: str | Path) -> DensityOfStates:
    """Read the total DOS of a vasprun.xml with pymatgen (no POTCAR, no eigenvalues parsed)."""
    from pymatgen.io.vasp import Vasprun

    path = Path(path)
    if not path.is_file():
        raise DOSFileError(path, "file not found")
    try:
        run = Vasprun(path, parse_potcar_file=False, parse_eigen=False, parse_projected_eigen=False)
        complete = run.complete_dos
    except Exception as err:  # pymatgen raises many types (ParseError, KeyError, ...) on bad files
        raise DOSFileError(path, f"cannot read the DOS from vasprun.xml ({type(err).__name__}: {err})") from None
    dos = dos_from_pymatgen(complete, str(path))
    _check_dos(dos, path)
    return dos


def _parse_row(text: str, path: Path, line: int) -> list[float]:
    fields = [f for f in re.split(r"[,\s]+", text.strip()) if f]
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise DOSFileError(path, f"non-numeric value in {text.strip()!r}", line) from None
    if len(values) not in (2, 3):
        raise DOSFileError(path, f"expected 2 columns (E, dos) or 3 (E, up, down), got {len(values)}", line)
    if not all(math.isfinite(v) for v in values):
        raise DOSFileError(path, "NaN or infinite value", line)
    return values


def read_two_column_dos(path: str | Path, efermi: float | None = None) -> DensityOfStates:
    """Read a text DOS: columns (E, dos) or (E, up, down) in eV and states/eV.

    Args:
        path: The file.
        efermi: Fermi level in eV; default: a ``# efermi = x`` comment, else 0 (energies already relative).
    """
    path = Path(path)
    rows, header_ef, width = [], None, None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DOSFileError(path, f"cannot read text ({err})") from None
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith(("#", "!")):
            match = _EFERMI_COMMENT.search(stripped)
            if match and header_ef is None:
                try:
                    header_ef = float(match.group(1))
                except ValueError:
                    raise DOSFileError(path, f"unreadable Fermi level in {stripped!r}", number) from None
            continue
        values = _parse_row(stripped, path, number)
        if width is not None and len(values) != width:
            raise DOSFileError(path, f"{len(values)} columns where earlier rows have {width}", number)
        width = len(values)
        rows.append((number, values))
    if len(rows) < 2:
        raise DOSFileError(path, "fewer than two data rows")
    table = np.array([v for _, v in rows], dtype=np.float64)  # (M, 2 or 3)
    densities = table[:, 1:].T.copy()  # (S, M)
    if densities.shape[0] == 2 and np.all(densities[1] <= 0):
        densities[1] = -densities[1]  # spin down plotted as negative
    steps = np.diff(table[:, 0])
    if np.any(steps <= 0):
        bad = rows[int(np.argmax(steps <= 0)) + 1][0]
        raise DOSFileError(path, "energies must increase strictly", bad)
    ef = efermi if efermi is not None else (header_ef if header_ef is not None else 0.0)
    return DensityOfStates(table[:, 0], densities, float(ef), str(path))


def _check_dos(dos: DensityOfStates, path: str | Path) -> None:
    if dos.energies.ndim != 1 or dos.energies.size < 2:
        raise DOSFileError(path, "the DOS has fewer than two energies")
    if dos.densities.shape[-1] != dos.energies.size:
        raise DOSFileError(path, f"{dos.densities.shape[-1]} densities for {dos.energies.size} energies")
    if np.any(np.diff(dos.energies) <= 0):
        raise DOSFileError(path, "energies must increase strictly")


def load_dos(path: str | Path, efermi: float | None = None) -> DensityOfStates:
    """Read a DOS file, choosing the reader from its name: ``*.json[.gz]``, ``*.xml[.gz]``, else text."""
    name = Path(path).name.lower()
    if name.endswith((".json", ".json.gz")):
        dos = read_pymatgen_dos_json(path)
    elif name.endswith((".xml", ".xml.gz")):
        dos = read_vasprun_dos(path)
    else:
        return read_two_column_dos(path, efermi)
    if efermi is not None:
        dos.efermi = float(efermi)
    return dos


def fetch_mp_dos(material_id: str, api_key: str | None = None) -> DensityOfStates:
    """Download the DOS of one Materials Project entry (needs ``mp-api`` and an API key; uses the network).

    Args:
        material_id: e.g. "mp-149".
        api_key: Materials Project API key; default: the ``MP_API_KEY`` environment variable.
    """
    try:
        from mp_api.client import MPRester
    except ImportError as err:
        raise ImportError(
            "fetch_mp_dos needs the optional package `mp-api`, which is not installed: pip install mp-api"
        ) from err
    api_key = api_key or os.environ.get("MP_API_KEY")
    if not api_key:
        raise RuntimeError(
            "fetch_mp_dos needs a Materials Project API key: set the MP_API_KEY environment variable "
            "(get a key at https://materialsproject.org/api) or pass api_key="
        )
    with MPRester(api_key) as rester:
        dos = rester.get_dos_by_material_id(material_id)
    if dos is None:
        raise LookupError(f"the Materials Project has no DOS for {material_id}")
    return dos_from_pymatgen(dos, source=material_id)


def dos_energy_grid(config: DOSConfig | None = None) -> np.ndarray:
    """The energy grid (n_points,) in eV that ``preprocess_dos`` samples (for the dataset manifest)."""
    config = config or DOSConfig()
    if config.n_points < 2 or not config.e_max > config.e_min:
        raise ValueError(f"need n_points >= 2 and e_max > e_min, got {config}")
    return np.linspace(config.e_min, config.e_max, config.n_points)


def _select_spin(densities: np.ndarray, spin: str, source: str) -> np.ndarray:
    if spin == "sum":
        return densities.sum(axis=0)
    if spin not in ("up", "down"):
        raise ValueError(f"unknown spin {spin!r}; use 'sum', 'up' or 'down'")
    if densities.shape[0] != 2:
        raise ValueError(f"{source}: spin={spin!r} needs a spin-polarised DOS")
    return densities[0 if spin == "up" else 1]


def _gaussian_kernel(sigma_points: float) -> np.ndarray:
    half = max(1, math.ceil(4 * sigma_points))
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma_points) ** 2)
    return kernel / kernel.sum()  # unit sum keeps the area on a uniform grid


def preprocess_dos(dos: DensityOfStates, config: DOSConfig | None = None) -> np.ndarray:
    """Shift, spin-sum, window, resample, smooth and normalise a DOS -> (n_points,) float32 on the grid."""
    config = config or DOSConfig()
    grid = dos_energy_grid(config)  # (P,) eV
    energies = dos.energies - dos.efermi if config.shift_to_fermi else dos.energies
    values = _select_spin(np.asarray(dos.densities, dtype=np.float64), config.spin, dos.source)  # (M,)
    step = grid[1] - grid[0]
    pad = math.ceil(4 * config.smoothing / step) if config.smoothing > 0 else 0
    padded = grid[0] + step * np.arange(-pad, grid.size + pad)  # (P + 2 pad,) eV
    curve = np.interp(padded, energies, values, left=0.0, right=0.0)
    if config.smoothing > 0:
        curve = np.convolve(curve, _gaussian_kernel(config.smoothing / step), mode="same")
    curve = curve[pad : pad + grid.size]
    if config.normalize == "area":
        area = float(np.sum((curve[1:] + curve[:-1]) * 0.5) * step)  # trapezoid rule, states
        curve = curve / area if area > 0 else curve
    elif config.normalize == "max":
        peak = float(curve.max())
        curve = curve / peak if peak > 0 else curve
    elif config.normalize != "none":
        raise ValueError(f"unknown normalisation {config.normalize!r}; use 'area', 'max' or 'none'")
    return curve.astype(np.float32)


def dos_or_none(source: DensityOfStates | str | Path | None, config: DOSConfig | None = None) -> np.ndarray | None:
    """Preprocessed DOS of a record, or None when the record has no DOS (absent, never zeros)."""
    if source is None:
        return None
    dos = source if isinstance(source, DensityOfStates) else load_dos(source)
    return preprocess_dos(dos, config)
