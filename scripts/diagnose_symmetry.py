"""How symmetric are generated crystals? spglib's crystal system of every CIF in a folder at several tolerances,
and the share of samples with two atoms closer than 0.5 Å (which spglib cannot analyse).

    python scripts/diagnose_symmetry.py runs/mp40_text_s3_compfirst/generated --symprec 0.01 0.1 0.3 0.5
    python scripts/diagnose_symmetry.py runs/diag/x46k_n1000_s50/cif --limit 300

Prints one JSON object: {symprec: {crystal system (or "unanalysable"): fraction}} plus "close_pairs" and "n".
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_text_benchmark import _read_cif  # noqa: E402 - the tolerant CIF reader (coinciding atoms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a folder of generated CIFs")
    parser.add_argument("--symprec", type=float, nargs="+", default=[0.01, 0.1, 0.3, 0.5], help="tolerances in Å")
    parser.add_argument("--limit", type=int, default=None, help="first N files (sorted by name)")
    args = parser.parse_args()

    from mmcrystal.evaluation.adherence import symmetry_info

    files = sorted(Path(args.folder).glob("*.cif"))[: args.limit]
    if not files:
        raise SystemExit(f"{args.folder}: no .cif files")
    systems = {p: Counter() for p in args.symprec}
    close = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            structure = _read_cif(path)
            distances = structure.distance_matrix + np.eye(len(structure)) * 1e9
            close += bool(len(structure) > 1 and distances.min() < 0.5)
            for p in args.symprec:
                systems[p][symmetry_info(structure, symprec=p)[1] or "unanalysable"] += 1
    n = len(files)
    out = {str(p): {k: round(v / n, 4) for k, v in c.most_common()} for p, c in systems.items()}
    print(json.dumps({"n": n, "close_pairs": round(close / n, 4), **out}, indent=1))


if __name__ == "__main__":
    main()
