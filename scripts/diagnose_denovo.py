"""Why are de novo samples invalid? Cell size against composition, per sample, for one or more samplers.

For each sample: structural validity (CDVAE: all distances > 0.5 Å, volume > 0.1 Å^3), the smallest interatomic
distance (Å), the volume per atom (Å^3) and the ratio of the cell volume to the volume its composition "expects":
V_exp = sum_i n_i v(Z_i), with per-element volumes v(Z) (Å^3/atom) fitted by non-negative least squares on reference
crystals (Vegard-like additivity; a rough, honest yardstick: for MP-20 the fit explains most of the variance of V,
its residual spread is printed). A ratio well below 1 means a cell too small for its atoms, so overlaps come from
the lattice; invalid samples with ratios near 1 point at the coordinates instead.

    python scripts/diagnose_denovo.py --model runs/x/pretrained --n 500 --steps 50 1000 \
        --reference ../shared/data/mp_20/val.csv.gz --out runs/x_diag.json [--sampler '{"corrector_steps": 0}']

Unconditional samples (every condition dropped, guidance 0), atom counts from the model's head, seed 0.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np


def fit_element_volumes(paths: list[str], limit: int, seed: int = 0) -> tuple[dict[int, float], float]:
    """Per-element atomic volumes (Å^3/atom) by non-negative least squares of V over element counts.

    Returns:
        ({Z: volume}, standard deviation of log(V / V_exp) over the fitted crystals).
    """
    import pandas as pd
    from pymatgen.core import Structure
    from scipy.optimize import nnls

    frames = [pd.read_csv(p) for p in paths]
    frame = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=seed).head(limit)
    rows, volumes = [], []
    for cif in frame["cif"]:
        structure = Structure.from_str(cif, "cif")
        counts = np.zeros(101)
        for site in structure:
            counts[site.specie.Z] += 1
        rows.append(counts)
        volumes.append(structure.volume)
    a, v = np.array(rows), np.array(volumes)
    used = np.flatnonzero(a.sum(0) > 0)
    coef, _ = nnls(a[:, used], v)
    table = {int(z): float(c) for z, c in zip(used, coef, strict=True)}
    ratio = v / np.maximum(a[:, used] @ coef, 1e-9)
    return table, float(np.std(np.log(ratio)))


def describe(structures: list, volumes: dict[int, float]) -> list[dict]:
    """One record per structure: valid, smallest distance (Å), volume per atom (Å^3), V / V_exp."""
    from mmcrystal.evaluation.validity import structural_validity

    fallback = float(np.median(list(volumes.values())))
    records = []
    for s in structures:
        valid, reason, smallest = structural_validity(s)
        if not np.isfinite(smallest):  # no pair within 0.5 Å: the true nearest distance
            dist = s.distance_matrix + np.diag(np.full(len(s), np.inf)) if len(s) > 1 else np.array([[np.inf]])
            smallest = float(dist.min())
        expected = sum(volumes.get(site.specie.Z, fallback) for site in s)
        records.append(
            {
                "valid": bool(valid),
                "reason": reason,
                "min_distance": float(smallest),
                "num_atoms": len(s),
                "volume_per_atom": float(s.volume / len(s)),
                "volume_ratio": float(s.volume / max(expected, 1e-9)),
            }
        )
    return records


def summarise(records: list[dict]) -> dict:
    """Validity and the cell-size picture of valid and invalid samples."""
    ratio = np.array([r["volume_ratio"] for r in records])
    valid = np.array([r["valid"] for r in records])
    normal = (ratio >= 0.8) & (ratio <= 1.25)
    out = {
        "n": len(records),
        "structural_validity": float(valid.mean()),
        "median_volume_ratio": float(np.median(ratio)),
        "log_volume_ratio_std": float(np.std(np.log(ratio))),
        "fraction_compressed (<0.8)": float((ratio < 0.8).mean()),
        "fraction_expanded (>1.25)": float((ratio > 1.25).mean()),
        "validity_if_ratio_0.8_1.25": float(valid[normal].mean()) if normal.any() else float("nan"),
        "validity_if_compressed": float(valid[ratio < 0.8].mean()) if (ratio < 0.8).any() else float("nan"),
        "invalid_median_volume_ratio": float(np.median(ratio[~valid])) if (~valid).any() else float("nan"),
        "valid_median_volume_ratio": float(np.median(ratio[valid])) if valid.any() else float("nan"),
    }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--steps", type=int, nargs="+", default=[50])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--reference", nargs="+", default=["../shared/data/mp_20/val.csv.gz"])
    parser.add_argument("--reference-limit", type=int, default=3000)
    parser.add_argument("--sampler", type=json.loads, default={},
                        help='SamplerConfig fields over the step-count defaults, e.g. \'{"lattice_eta": 0.0}\'')  # fmt: skip
    parser.add_argument("--out", default=None, help="JSON with the summaries and every record")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    from mmcrystal.generation import CrystalGenerator

    volumes, spread = fit_element_volumes(args.reference, args.reference_limit)
    print(f"element volumes fitted on {args.reference_limit} reference crystals; std of log(V / V_exp) = {spread:.3f}")
    generator = CrystalGenerator.from_pretrained(args.model)
    generator.sampler_settings = dict(args.sampler)
    result = {"model": args.model, "reference_log_ratio_std": spread, "runs": {}}
    for steps in args.steps:
        start = time.perf_counter()
        structures = generator.sample(n=args.n, steps=steps, guidance=0.0, seed=args.seed, batch_size=args.batch_size)
        wall = time.perf_counter() - start
        records = describe(structures, volumes)
        summary = {"steps": steps, **args.sampler, "sampling_s": round(wall, 1), **summarise(records)}
        result["runs"][str(steps)] = {"summary": summary, "records": records}
        print(json.dumps(summary))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
