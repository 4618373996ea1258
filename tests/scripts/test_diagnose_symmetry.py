"""scripts/diagnose_symmetry.py: crystal-system shares and close pairs of a folder of CIFs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pymatgen.core import Lattice, Structure

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "diagnose_symmetry.py"


def test_reports_systems_and_close_pairs(tmp_path):
    salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    salt.to(filename=str(tmp_path / "a.cif"))
    skew = Structure(
        Lattice.from_parameters(4.1, 5.3, 6.2, 71, 83, 97),
        ["Na", "Cl", "Cl"],
        [[0.1, 0.2, 0.3], [0.55, 0.71, 0.12], [0.56, 0.71, 0.12]],
    )  # fmt: skip (two Cl 0.04 Å apart)
    skew.to(filename=str(tmp_path / "b.cif"))
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--symprec", "0.1"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    result = json.loads(out.stdout[out.stdout.index("{") :])
    assert result["n"] == 2 and result["close_pairs"] == 0.5
    assert result["0.1"]["cubic"] == 0.5 and sum(result["0.1"].values()) == 1.0
