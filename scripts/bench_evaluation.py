"""Benchmark and sanity-check the evaluation stages on real data: MP-20 test "as if generated".

    python scripts/bench_evaluation.py --workdir runs/bench_evaluation --parts a1 a2 a3 b1 b2

Parts (results as JSON in <workdir>/summary_<part>.json, and printed):

a1  validity + uniqueness + novelty of the full MP-20 test split (9,046) against val + train_partial (12,467) as
    the training-set reference; the reference index is built cold first (timed), then reused.
a2  CHGNet E_hull of a seeded random subset of test (``--hull-n``, default 300), single-point energies for samples
    and references (MP-20 structures are already DFT-relaxed), hull from the reference structures inside the
    samples' chemical systems plus ASE elemental prototypes; compared with MP's own e_above_hull column.
a3  CSP metrics of MP-20 test against itself (expect match rate 1, RMSE 0 without a validity gate; the DiffCSP
    "cdvae" gate caps the rate at the SMACT-valid fraction).
b1  time 1,000 test structures through stages validity, matching, adherence (composition, chemical system,
    crystal system and space group from the table, XRD against patterns simulated beforehand) and distribution
    (coverage / Wasserstein against a seeded 2,000-structure val subset; its fingerprints are computed cold once,
    timed separately, then cached).
b2  CHGNet throughput on this machine: batched single points and FIRE relaxations (fmax 0.1 eV/Å, <= 500 steps)
    of test structures as given (DFT-relaxed: few steps) and perturbed like raw samples (+5 % lattice, 0.1 Å noise).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mmcrystal.evaluation.run import evaluate, evaluate_csp

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mp_20"
TEST = str(SHARED / "test.csv.gz")
REFERENCE = [str(SHARED / "val.csv.gz"), *sorted(glob.glob(str(SHARED / "train_partial" / "*.csv")))]
CRYSTAL_SYSTEMS = [(2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal")]
CRYSTAL_SYSTEMS += [(167, "trigonal"), (194, "hexagonal"), (230, "cubic")]


def crystal_system(number: int) -> str:
    return next(name for top, name in CRYSTAL_SYSTEMS if number <= top)


def fresh(path: Path) -> str:
    """An empty output folder, so that no chunk of an earlier run is reused in a timed run."""
    shutil.rmtree(path, ignore_errors=True)
    return str(path)


def subset(path: str, n: int, seed: int, out: Path) -> Path:
    frame = pd.read_csv(path)
    picks = np.sort(np.random.default_rng(seed).choice(len(frame), n, replace=False))
    frame.iloc[picks].to_csv(out, index=False)
    return out


def part_a1(work: Path, workers: int) -> dict:
    start = time.perf_counter()
    evaluate(TEST, fresh(work / "a1_index_only"), reference=REFERENCE, stages=["matching"], workers=workers,
             cache_dir=str(work / "cache"), plots=False, max_chunks=0)  # fmt: skip
    index_seconds = time.perf_counter() - start
    start = time.perf_counter()
    payload = evaluate(
        TEST, fresh(work / "a1"), reference=REFERENCE, stages=["validity", "matching"], workers=workers,
        cache_dir=str(work / "cache"), dataset="mp20", split="test", train_split="val + train_partial (12,467)",
    )  # fmt: skip
    m = payload["metrics"]
    return {
        "reference_index_cold_seconds": index_seconds,
        "evaluate_seconds": time.perf_counter() - start,
        "validity": m["validity"],
        "matching": m["matching"],
        "reference": payload["protocol"]["reference"],
        "cost": m["cost"]["wall_seconds_by_stage"],
        "worker_cpu": m["cost"]["worker_cpu_seconds_by_stage"],
    }


def _ehull_stats(rows: pd.DataFrame, table: pd.DataFrame) -> dict:
    from scipy.stats import spearmanr

    both = rows.merge(table, on="id", suffixes=("", "_mp")).dropna(subset=["e_above_hull"])
    dense = both[both["hull_n_compounds"] > 0]
    out = {
        "n_with_hull": len(both),
        "n_with_competing_compound": len(dense),
        "median_mp": float(both["e_above_hull_mp"].median()),
    }
    for name, part in (("all", both), ("with_competing_compound", dense)):
        if len(part) > 2:
            e = part["e_above_hull"]
            out[name] = {
                "quantiles_5_25_50_75_95": e.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).round(4).tolist(),
                "fraction_le_0": float((e <= 0).mean()),
                "fraction_le_0.1": float((e <= 0.1).mean()),
                "spearman_vs_mp": float(spearmanr(e, part["e_above_hull_mp"]).statistic),
            }
    return out


def part_a2(work: Path, workers: int, n: int, seed: int) -> dict:
    """E_hull of a test subset against (i) the training reference only, (ii) training reference + test itself."""
    samples = subset(TEST, n, seed, work / f"a2_test_subset_{n}.csv")
    table = pd.read_csv(samples)[["material_id", "e_above_hull"]].rename(columns={"material_id": "id"})
    results = {}
    for name, hull_reference in (("training_reference", REFERENCE), ("training_plus_test", [*REFERENCE, TEST])):
        start = time.perf_counter()
        payload = evaluate(
            str(samples), fresh(work / f"a2_{name}"), reference=REFERENCE, hull_reference=hull_reference,
            stages=["validity", "matching", "stability"], relax=False, workers=workers, cache_dir=str(work / "cache"),
            seed=seed, dataset="mp20", split="test",
        )  # fmt: skip
        m = payload["metrics"]
        rows = pd.read_csv(work / f"a2_{name}" / "per_structure.csv")
        results[name] = {
            "seconds": time.perf_counter() - start,
            "stability": m["stability"],
            "hull": {k: v for k, v in payload["protocol"]["hull"].items() if k != "elements_with_endpoints"},
            "n_elements_with_endpoints": len(payload["protocol"]["hull"]["elements_with_endpoints"]),
            "energy_model": payload["protocol"]["energy_model"],
            "potential_calls": m["cost"]["potential_calls"],
            "e_hull_vs_mp": _ehull_stats(rows, table),
        }
    return results


def part_a3(work: Path, workers: int) -> dict:
    out = {}
    for gate in ("none", "cdvae"):
        start = time.perf_counter()
        payload = evaluate_csp(TEST, TEST, fresh(work / f"a3_{gate}"), validity_gate=gate, workers=workers)
        out[gate] = {"seconds": time.perf_counter() - start, **payload["metrics"]}
    return out


def part_b1(work: Path, workers: int, seed: int) -> dict:
    samples = subset(TEST, 1000, seed, work / "b1_test_1000.csv")
    frame = pd.read_csv(samples)
    conditions = pd.DataFrame(
        {
            "id": frame["material_id"],
            "composition": frame["pretty_formula"],
            "chemical_system": ["-".join(sorted(eval(e))) for e in frame["elements"]],  # noqa: S307 - list literal
            "crystal_system": [crystal_system(int(n)) for n in frame["spacegroup.number"]],
            "space_group": frame["spacegroup.number"],
        }
    )
    conditions.to_csv(work / "b1_conditions.csv", index=False)
    from mmcrystal.evaluation.adherence import default_pattern_fn
    from mmcrystal.evaluation.inputs import load_structures

    start = time.perf_counter()
    _, structures = load_structures(str(samples))
    fn, description = default_pattern_fn()
    np.save(work / "b1_xrd.npy", fn(structures))
    xrd_target_seconds = time.perf_counter() - start
    dist_ref = dict(distribution_reference=[REFERENCE[0]], distribution_reference_max=2000)
    from mmcrystal.evaluation.aggregate import reference_features
    from mmcrystal.evaluation.inputs import worker_pool

    start = time.perf_counter()
    with worker_pool(max(workers, 1)) as pool:  # cold reference fingerprints, cached for the timed run
        reference_features([REFERENCE[0]], work / "cache", 2000, seed, executor=pool)
    features_seconds = time.perf_counter() - start
    start = time.perf_counter()
    payload = evaluate(
        str(samples), fresh(work / "b1"), reference=REFERENCE, stages=["validity", "matching", "adherence", "distribution"],
        conditions=str(work / "b1_conditions.csv"), xrd_targets=str(work / "b1_xrd.npy"), workers=workers,
        cache_dir=str(work / "cache"), seed=seed, dataset="mp20", split="test", **dist_ref,
    )  # fmt: skip
    m = payload["metrics"]
    return {
        "evaluate_seconds_warm_caches": time.perf_counter() - start,
        "distribution_reference_features_cold_seconds": features_seconds,
        "xrd_target_simulation_seconds": xrd_target_seconds,
        "xrd_simulator": description,
        "wall_by_stage": m["cost"]["wall_seconds_by_stage"],
        "worker_cpu_by_stage": m["cost"]["worker_cpu_seconds_by_stage"],
        "validity": m["validity"],
        "matching": m["matching"],
        "adherence": m["adherence"],
        "distribution": m["distribution"],
    }


def part_b2(n_single: int, n_relax: int, seed: int, threads: int) -> dict:
    import torch

    from mmcrystal.evaluation.inputs import load_structures
    from mmcrystal.evaluation.stability import ChgnetPotential, RelaxConfig, stability_records

    torch.set_num_threads(threads)
    np.random.seed(seed)  # Structure.perturb draws from numpy's global generator
    _, structures = load_structures(TEST)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(structures), n_single + n_relax, replace=False)
    single = [structures[i] for i in picks[:n_single]]
    relax = [structures[i] for i in picks[n_single:]]
    potential = ChgnetPotential(RelaxConfig(relax=False))
    potential.single_point(single[:8])  # warm-up (model load, first graph)
    start = time.perf_counter()
    potential.single_point(single)
    sp_seconds = time.perf_counter() - start
    out = {
        "torch_threads": threads,
        "single_point_structures_per_s": n_single / sp_seconds,
        "mean_atoms_single": float(np.mean([len(s) for s in single])),
        "mean_atoms_relax": float(np.mean([len(s) for s in relax])),
    }
    # as given (DFT-relaxed MP-20 structures: few steps) and perturbed like a raw generated sample
    # (every atom moved 0.1 Å in a seeded random direction, cell scaled by 1.05)
    perturbed = [s.copy() for s in relax]
    for s in perturbed:
        s.scale_lattice(s.volume * 1.05**3)
        s.perturb(0.1)
    for name, structures in (("as_given", relax), ("perturbed", perturbed)):
        relaxer = ChgnetPotential(RelaxConfig(relax=True))
        start = time.perf_counter()
        rows = stability_records(structures, relaxer)
        seconds = time.perf_counter() - start
        out[f"relax_{name}"] = {
            "structures_per_s": n_relax / seconds,
            "force_evaluations_per_s": relaxer.n_relax_steps / seconds,
            "steps_mean": relaxer.n_relax_steps / n_relax,
            "converged": sum(bool(r.get("relax_converged")) for r, _ in rows),
            "rmsd_mean": float(np.mean([r["relax_rmsd"] for r, _ in rows if "relax_rmsd" in r])),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/bench_evaluation")
    parser.add_argument("--parts", nargs="+", default=["a1", "a2", "a3", "b1", "b2"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hull-n", type=int, default=300)
    parser.add_argument("--single-n", type=int, default=200)
    parser.add_argument("--relax-n", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    runners = {
        "a1": lambda: part_a1(work, args.workers),
        "a2": lambda: part_a2(work, args.workers, args.hull_n, args.seed),
        "a3": lambda: part_a3(work, args.workers),
        "b1": lambda: part_b1(work, args.workers, args.seed),
        "b2": lambda: part_b2(args.single_n, args.relax_n, args.seed, args.threads),
    }
    for part in args.parts:
        load_before, start = os.getloadavg()[0], time.perf_counter()
        result = runners[part]()
        result["_run"] = {
            "seconds": time.perf_counter() - start,
            "load_average_1min_before": load_before,
            "load_average_1min_after": os.getloadavg()[0],
        }
        (work / f"summary_{part}.json").write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps({part: result}, default=str)[:4000])


if __name__ == "__main__":
    main()
