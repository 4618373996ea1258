"""Throughput of mmcrystal's powder-XRD simulator vs pymatgen's XRDCalculator on MP-20 test structures.

Same wavelength (Cu Ka) and 2theta range (5-90 degrees) everywhere. Timed (CIF parsing excluded everywhere):
- pymatgen ``XRDCalculator().get_pattern`` (peak list), in 1 process and in 2 forked processes;
- ours, pymatgen-equivalent peak lists from structures (float64, tensor conversion and merging included);
- ours, 4096-bin Gaussian profiles from batch tensors (float32; the training path), and from structures.
Each of ours runs with torch threads 1 and 2, and as 2 forked processes x 1 thread. Reports the median (and best) of
``--repeats`` runs in structures/s.

    .venv/bin/python scripts/bench_xrd.py --n 500
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from mmcrystal.modalities.xrd import XRDConfig, peaks_from_structures, simulate_xrd, structures_to_tensors

DEFAULT_DATA = Path(os.environ.get("MMCRYSTAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RANGE = (5.0, 90.0)
_STATE: dict = {}  # inherited by forked workers: structures, tensor batches, settings


def _pymatgen(indices) -> int:
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    calc = XRDCalculator("CuKa")
    return sum(len(calc.get_pattern(_STATE["structures"][i], two_theta_range=RANGE).x) for i in indices)


def _ours_peaks(indices) -> int:
    structures = [_STATE["structures"][i] for i in indices]
    config = XRDConfig(two_theta_min=RANGE[0], two_theta_max=RANGE[1])
    return sum(len(p[0]) for p in peaks_from_structures(structures, config, _STATE["batch_size"]))


def _ours_profile_tensors(batch_ids) -> int:
    config = XRDConfig(two_theta_min=RANGE[0], two_theta_max=RANGE[1], n_bins=4096, fwhm=0.1)
    return sum(simulate_xrd(**_STATE["batches"][b], config=config).shape[0] for b in batch_ids)


def _ours_profile_structures(indices) -> int:
    config = XRDConfig(two_theta_min=RANGE[0], two_theta_max=RANGE[1], n_bins=4096, dtype="float32")
    bs = _STATE["batch_size"]
    chunks = [[_STATE["structures"][i] for i in indices[j : j + bs]] for j in range(0, len(indices), bs)]
    return sum(simulate_xrd(**structures_to_tensors(c, dtype=torch.float32), config=config).shape[0] for c in chunks)


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _time(fn, items, procs: int, threads: int, repeats: int) -> list[float]:
    """Wall-clock seconds of ``fn`` over ``items`` (split between ``procs`` forked processes), per repeat."""
    times = []
    torch.set_num_threads(threads)
    fn(items[: max(1, len(items) // 20)])  # warm-up (imports, tables, allocator)
    for _ in range(repeats):
        if procs == 1:
            start = time.perf_counter()
            fn(items)
        else:
            halves = [items[k::procs] for k in range(procs)]
            with mp.get_context("fork").Pool(procs, _worker_init, (threads,)) as pool:
                pool.map(fn, [halves[0][:1]] * procs)  # start and warm the workers outside the timing
                start = time.perf_counter()
                pool.map(fn, halves)
        times.append(time.perf_counter() - start)
    return times


def _load(path: Path, n: int):
    from pymatgen.core import Structure

    frame = pd.read_csv(path, nrows=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Structure.from_str(cif, fmt="cif") for cif in frame["cif"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "mp_20" / "test.csv.gz")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write JSON results here")
    args = parser.parse_args(argv)
    structures = _load(args.data, args.n)
    _STATE.update(structures=structures, batch_size=args.batch_size)
    bs = args.batch_size
    _STATE["batches"] = [
        structures_to_tensors(structures[i : i + bs], dtype=torch.float32) for i in range(0, len(structures), bs)
    ]
    indices, batch_ids = list(range(len(structures))), list(range(len(_STATE["batches"])))
    runs = [("pymatgen XRDCalculator (peaks)", _pymatgen, indices, 1, 1), ("pymatgen", _pymatgen, indices, 2, 1)]
    for name, fn, items in (
        ("ours: peaks from structures (float64)", _ours_peaks, indices),
        ("ours: 4096-bin profiles from tensors (float32)", _ours_profile_tensors, batch_ids),
        ("ours: 4096-bin profiles from structures (float32)", _ours_profile_structures, indices),
    ):
        runs += [(name, fn, items, 1, 1), (name, fn, items, 1, 2), (name, fn, items, 2, 1)]
    results = []
    for name, fn, items, procs, threads in runs:
        times = _time(fn, items, procs, threads, args.repeats)
        results.append({"name": name, "processes": procs, "threads": threads, "seconds": times,
                        "per_s_median": len(structures) / statistics.median(times),
                        "per_s_best": len(structures) / min(times)})  # fmt: skip
        print(f"{name:52s} procs={procs} threads={threads}: {results[-1]['per_s_median']:8.0f} /s median, "
              f"{results[-1]['per_s_best']:8.0f} /s best", flush=True)  # fmt: skip
    ref = {r["processes"]: r["per_s_median"] for r in results if r["name"].startswith("pymatgen")}
    print(f"\nN={len(structures)} MP-20 test structures, Cu Ka, 2theta {RANGE}, batch {bs}; "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}")  # fmt: skip
    print("| method | procs x threads | structures/s (median) | best | vs pymatgen 1 proc | vs pymatgen 2 procs |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['processes']} x {r['threads']} | {r['per_s_median']:.0f} | {r['per_s_best']:.0f} "
              f"| {r['per_s_median'] / ref[1]:.1f}x | {r['per_s_median'] / ref[2]:.1f}x |")  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"n": len(structures), "batch_size": bs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
