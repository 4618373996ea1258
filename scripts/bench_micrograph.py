"""Benchmark the Z-contrast simulator: images/s of 128x128 over real MP-20 and Perov-5 structures (CPU).

Structures are parsed from the shared CIFs before timing (parsing is not part of the simulator). Each setting
runs one warm-up batch, then ``--repeats`` timed passes over ``--n-images`` structures; the best pass is reported
with the median, because the machine may be shared. Results (command, hardware from ``lscpu``, date, load
average) are appended to a Markdown file, one section per run.

    .venv/bin/python scripts/bench_micrograph.py --n-images 512 --out benchmarks/results/micrograph.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from mmcrystal.modalities.micrograph import MicrographConfig, simulate_micrographs

ROOT = Path(__file__).resolve().parents[1]
_HEADER = """# Micrograph simulator throughput

Images/s of 128x128 Z-contrast images from real structures on CPU (`scripts/bench_micrograph.py`). Each run is
appended with its load average: the machine is shared, and other jobs lower the numbers.
"""
DATASETS = {"mp_20": "mp_20/test.csv.gz", "perov_5": "perov_5/test.csv"}


def load_structures(shared: Path, dataset: str, n: int) -> list:
    from pymatgen.core import Structure

    frame = pd.read_csv(shared / DATASETS[dataset], nrows=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF rounding notices
        return [Structure.from_str(cif, fmt="cif") for cif in frame["cif"]]


def time_setting(structures: list, config: MicrographConfig, batch: int, repeats: int) -> list[float]:
    """Images/s of each timed pass."""
    simulate_micrographs(structures[:batch], config)  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(structures), batch):
            simulate_micrographs(structures[i : i + batch], config)
        rates.append(len(structures) / (time.perf_counter() - start))
    return rates


def hardware() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown (lscpu unavailable)"
    keep = ("Architecture", "Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Socket(s)")
    return "\n".join(line for line in out.splitlines() if line.split(":")[0].strip() in keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared-data",
        type=Path,
        default=Path(os.environ.get("MMCRYSTAL_SHARED_DATA", ROOT.parent / "shared" / "data")),
    )
    parser.add_argument("--n-images", type=int, default=512, help="structures (= images) per dataset")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file for the results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {
        "default (shot + read noise)": MicrographConfig(),
        "noiseless": MicrographConfig(dose=None, read_noise=0.0),
    }
    load_before = os.getloadavg()
    rows = []
    for dataset in DATASETS:
        structures = load_structures(args.shared_data, dataset, args.n_images)
        for name, config in settings.items():
            rates = time_setting(structures, config, args.batch_size, args.repeats)
            rows.append((dataset, name, len(structures), max(rates), statistics.median(rates)))
            print(f"{dataset:8s} {name:28s} best {max(rates):7.1f} img/s  median {statistics.median(rates):7.1f}")
    load_after = os.getloadavg()
    if args.out:
        write_report(args, rows, load_before, load_after)


def write_report(args, rows, load_before, load_after) -> None:
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    lines = [
        f"## Run of {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        "",
        f"- command: `{command}`",
        f"- torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, batch size {args.batch_size}",
        f"- load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f} (shared machine)",
        "- images: 128x128, pixel 0.15 Å, probe FWHM 0.9 Å, automatic zone axis; CIF parsing not timed",
        "",
        "```",
        hardware(),
        "```",
        "",
        "| dataset | setting | images | best images/s | median images/s |",
        "|---|---|---|---|---|",
        *(f"| {d} | {s} | {n} | {best:.0f} | {med:.0f} |" for d, s, n, best, med in rows),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = args.out.read_text(encoding="utf-8") if args.out.is_file() else _HEADER
    args.out.write_text(previous.rstrip("\n") + "\n\n" + "\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
