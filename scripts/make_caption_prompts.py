"""Write a prompts CSV for ``scripts/run_text_benchmark.py`` from any structure CSV: one generated template caption
per structure (``mmcrystal.modalities.captions.generate_captions``: reduced formula + crystal system, the captions
the CPU text decoders were trained with), so text conditioning can be measured on in-distribution prompts, apart
from the shift to MP-40's GPT-written captions.

    python scripts/make_caption_prompts.py ../shared/data/mp_20/test.csv.gz runs/mp20_test_prompts.csv --n 50

Output columns: material_id, cif, prompt, crystal_system (spglib, symprec 0.1 Å). A structure that does not parse is
skipped with its id and the reason printed, and counted at the end.
"""

from __future__ import annotations

import argparse
import warnings

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("structures", help="CSV with a cif column (and material_id)")
    parser.add_argument("out", help="prompts CSV to write")
    parser.add_argument("--n", type=int, default=50, help="first N rows")
    parser.add_argument("--seed", type=int, default=0, help="caption template choice")
    args = parser.parse_args()

    from pymatgen.core import Structure

    from mmcrystal.modalities.captions import captions_from_facts, describe_structure

    frame = pd.read_csv(args.structures, nrows=args.n)
    rows, skipped = [], 0
    for i, row in enumerate(frame.itertuples()):
        material_id = str(getattr(row, "material_id", i))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structure = Structure.from_str(row.cif, fmt="cif")
                facts = describe_structure(structure)
        except Exception as error:  # noqa: BLE001 - pymatgen / spglib raise several types
            print(f"{material_id}: skipped ({type(error).__name__}: {error})")
            skipped += 1
            continue
        prompt = captions_from_facts(facts, None, n=1, seed=args.seed + i)[0]
        rows.append({"material_id": material_id, "cif": row.cif, "prompt": prompt,
                     "crystal_system": facts.crystal_system})  # fmt: skip
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"{len(rows)} prompts -> {args.out} ({skipped} skipped)")


if __name__ == "__main__":
    main()
