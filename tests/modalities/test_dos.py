"""DOS readers and preprocessing on small synthetic files; absent DOS stays absent."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from mmcrystal.modalities.dos import (
    DensityOfStates,
    DOSConfig,
    DOSFileError,
    dos_energy_grid,
    dos_from_mapping,
    dos_or_none,
    fetch_mp_dos,
    load_dos,
    preprocess_dos,
    read_two_column_dos,
    read_vasprun_dos,
)

EFERMI = 5.0  # eV, absolute


def _gauss(energies, centre, width=0.15, height=1.0):
    return height * np.exp(-0.5 * ((energies - centre) / width) ** 2)


def _write_columns(path: Path, columns, header: str = "") -> Path:
    body = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in np.column_stack(columns))
    path.write_text(header + body + "\n")
    return path


@pytest.fixture()
def energies():
    return np.linspace(-20.0, 25.0, 4501)  # absolute eV, 0.01 eV steps


def test_peak_lands_on_the_right_bin_after_shifting_by_fermi(tmp_path, energies):
    path = _write_columns(tmp_path / "dos.dat", [energies, _gauss(energies, EFERMI + 2.5)], f"# efermi = {EFERMI}\n")
    dos = load_dos(path)
    assert dos.efermi == EFERMI and dos.densities.shape == (1, energies.size)
    grid = dos_energy_grid()
    assert grid.shape == (256,) and grid[0] == -10.0 and grid[-1] == 10.0
    curve = preprocess_dos(dos)
    assert curve.shape == (256,) and curve.dtype == np.float32
    assert int(np.argmax(curve)) == int(np.argmin(np.abs(grid - 2.5)))
    unshifted = preprocess_dos(dos, DOSConfig(shift_to_fermi=False))
    assert int(np.argmax(unshifted)) == int(np.argmin(np.abs(grid - (EFERMI + 2.5))))
    explicit = read_two_column_dos(path, efermi=EFERMI + 1.0)  # an argument overrides the comment
    assert int(np.argmax(preprocess_dos(explicit))) == int(np.argmin(np.abs(grid - 1.5)))


def test_spin_sum_and_single_spins(tmp_path, energies):
    up, down = _gauss(energies, EFERMI - 3.0), _gauss(energies, EFERMI + 4.0, height=2.0)
    path = _write_columns(tmp_path / "spin.csv", [energies, up, -down], f"# E_F: {EFERMI}\n")  # down negative
    dos = read_two_column_dos(path)
    assert dos.densities.shape == (2, energies.size) and np.all(dos.densities >= 0)
    grid = dos_energy_grid()
    raw = DOSConfig(normalize="none")
    total = preprocess_dos(dos, raw)
    at = {e: int(np.argmin(np.abs(grid - e))) for e in (-3.0, 4.0)}
    assert total[at[-3.0]] == pytest.approx(_gauss(grid[at[-3.0]], -3.0), rel=1e-3)  # peak heights kept
    assert total[at[4.0]] == pytest.approx(_gauss(grid[at[4.0]], 4.0, height=2.0), rel=1e-3)
    only_up = preprocess_dos(dos, DOSConfig(normalize="none", spin="up"))
    assert only_up[at[4.0]] < 1e-6 and only_up[at[-3.0]] == pytest.approx(total[at[-3.0]])
    only_down = preprocess_dos(dos, DOSConfig(normalize="none", spin="down"))
    assert np.allclose(only_up + only_down, total, atol=1e-6)
    with pytest.raises(ValueError, match="spin-polarised"):
        preprocess_dos(DensityOfStates(energies, up[None], EFERMI), DOSConfig(spin="up"))


def test_window_normalisation_and_smoothing(tmp_path, energies):
    values = _gauss(energies, EFERMI - 15.0) + _gauss(energies, EFERMI + 1.0, height=3.0)
    dos = DensityOfStates(energies, values[None], EFERMI)
    grid = dos_energy_grid()
    raw = preprocess_dos(dos, DOSConfig(normalize="none"))
    assert raw[grid < -8].max() < 1e-6  # the -15 eV peak is outside the default window
    wide = preprocess_dos(dos, DOSConfig(e_min=-20.0, n_points=301, normalize="none"))
    assert wide[np.argmin(np.abs(dos_energy_grid(DOSConfig(e_min=-20.0, n_points=301)) + 15.0))] > 0.9
    area = preprocess_dos(dos, DOSConfig(normalize="area"))
    assert np.trapezoid(area, grid) == pytest.approx(1.0, rel=1e-5)
    assert preprocess_dos(dos, DOSConfig(normalize="max")).max() == pytest.approx(1.0)
    smooth = preprocess_dos(dos, DOSConfig(normalize="none", smoothing=0.5))
    assert smooth.max() < 0.5 * raw.max()  # broader and lower ...
    assert np.trapezoid(smooth, grid) == pytest.approx(np.trapezoid(raw, grid), rel=1e-3)  # ... same area
    assert np.all(preprocess_dos(DensityOfStates(energies, 0 * values[None], 0.0)) == 0)  # no division by 0


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("# efermi = 1\n-1 0.5\n0 0.7\n1 abc\n", 4, "non-numeric"),
        ("-1 0.5\n0 0.7 0.1\n1 0.2\n", 2, "columns where earlier rows have 2"),
        ("-1 0.5 1 2\n0 0.7 1 2\n", 1, "expected 2 columns"),
        ("-1 0.5\n0 0.7\n0 0.9\n", 3, "increase strictly"),
        ("0 nan\n1 0.2\n", 1, "NaN"),
    ],
)
def test_malformed_text_files_name_file_and_line(tmp_path, text, line, reason):
    path = tmp_path / "bad_dos.txt"
    path.write_text(text)
    with pytest.raises(DOSFileError, match=rf"bad_dos\.txt:{line}: .*{reason}"):
        read_two_column_dos(path)


def test_too_short_and_bad_json_files(tmp_path):
    (tmp_path / "one.dat").write_text("0 1\n")
    with pytest.raises(DOSFileError, match=r"one\.dat: fewer than two"):
        load_dos(tmp_path / "one.dat")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DOSFileError, match=r"bad\.json: not valid JSON"):
        load_dos(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"formula": "Cu"}))
    with pytest.raises(DOSFileError, match=r"other\.json: no DOS found"):
        load_dos(tmp_path / "other.json")


def test_pymatgen_dos_and_complete_dos_json(tmp_path, energies):
    from pymatgen.core import Lattice, Structure
    from pymatgen.electronic_structure.core import Spin
    from pymatgen.electronic_structure.dos import CompleteDos, Dos

    up, down = _gauss(energies, EFERMI + 1.0), _gauss(energies, EFERMI - 2.0)
    dos = Dos(EFERMI, energies, {Spin.up: up, Spin.down: down})
    (tmp_path / "dos.json").write_text(json.dumps(dos.as_dict()))
    structure = Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    complete = CompleteDos(structure, dos, {})
    (tmp_path / "complete.json").write_text(json.dumps({"dos": complete.as_dict()}))  # wrapped, as some dumps are
    text = _write_columns(tmp_path / "same.dat", [energies, up, down], f"# efermi = {EFERMI}\n")
    expected = preprocess_dos(load_dos(text))
    for name in ("dos.json", "complete.json"):
        loaded = load_dos(tmp_path / name)
        assert loaded.efermi == EFERMI and loaded.densities.shape == (2, energies.size)
        assert np.allclose(preprocess_dos(loaded), expected, atol=1e-6)


def test_vasprun_reader(tmp_path):
    spec = importlib.util.find_spec("ase")
    vasprun = Path(spec.origin).parent / "test" / "testdata" / "vasp" / "vasprun_pstress.xml" if spec else None
    if vasprun is None or not vasprun.is_file():
        pytest.skip("no vasprun.xml test file shipped with ase here")
    dos = load_dos(vasprun)
    assert dos.efermi == pytest.approx(9.21741277) and dos.densities.shape[1] == dos.energies.size
    curve = preprocess_dos(dos, DOSConfig(smoothing=0.1))
    assert np.isfinite(curve).all() and curve.max() > 0
    (tmp_path / "vasprun.xml").write_text("<modeling><generator>")
    with pytest.raises(DOSFileError, match=r"vasprun\.xml: cannot read the DOS"):
        read_vasprun_dos(tmp_path / "vasprun.xml")


def test_mp_fetcher_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    if importlib.util.find_spec("mp_api") is None:
        with pytest.raises(ImportError, match="pip install mp-api"):
            fetch_mp_dos("mp-149")
    fake = types.ModuleType("mp_api")
    fake.client = types.ModuleType("mp_api.client")
    fake.client.MPRester = object
    monkeypatch.setitem(sys.modules, "mp_api", fake)
    monkeypatch.setitem(sys.modules, "mp_api.client", fake.client)
    with pytest.raises(RuntimeError, match="MP_API_KEY"):
        fetch_mp_dos("mp-149")


def test_shared_aflow_records_have_no_dos(shared_data):
    entries = json.loads((shared_data / "aflow_sp_metals_dos_fermi" / "sp_metal_aflow_844.json").read_text())
    assert len(entries) == 844 and all(len(e["dos_fermi"]) == 7 for e in entries)
    assert all(dos_from_mapping(e) is None for e in entries)  # 7 numbers are not a DOS curve
    assert dos_or_none(None) is None
