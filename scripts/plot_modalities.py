"""Render, for a few records, the structure's XRD next to pymatgen's and its simulated micrograph (PNG files).

python scripts/plot_modalities.py --csv ../shared/data/mp_20/test.csv.gz --n 4 --out runs/plots
"""

from __future__ import annotations

import argparse
import warnings

import pandas as pd
from pymatgen.core import Structure

from mmcrystal.modalities.plots import plot_structure_modalities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", default="../shared/data/mp_20/test.csv.gz")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--out", default="runs/plots")
    args = parser.parse_args()
    frame = pd.read_csv(args.csv, nrows=args.n)
    for _, row in frame.iterrows():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(row["cif"], fmt="cif")
        name = f"{row['material_id']}_{structure.composition.reduced_formula}"
        result = plot_structure_modalities(structure, f"{args.out}/{name}.png", title=name)
        print(f"{args.out}/{name}.png: {result['pymatgen_peaks']} peaks, disagreements: {result['disagreements']}")


if __name__ == "__main__":
    main()
