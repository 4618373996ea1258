"""Benchmark `mmcrystal prepare` throughput (structures/s) on MP-20 val (9,047 rows) from the local mirror.

    python scripts/bench_prepare.py --data ../shared/data --workers 2 [--modalities captions] [--limit N]

Runs prepare into a fresh temporary folder (nothing cached), reports wall time, structures/s and the counts, and
checks that every row is either in a shard or in rejects.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from mmcrystal.data.prepare import PrepareConfig, prepare_sources
from mmcrystal.data.readers import SourceSpec


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.CalledProcessError):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data", help="mirror folder holding mp_20/val.csv.gz")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modalities", default="", help="comma-separated derived modalities")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default=None, help="keep the shards here (default: a temporary folder)")
    args = parser.parse_args()
    modalities = [m for m in args.modalities.split(",") if m]
    source = SourceSpec(str(Path(args.data) / "mp_20" / "val.csv.gz"), split="val")
    cfg = PrepareConfig(args.samples_per_shard, args.workers, modalities, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        start = time.perf_counter()
        manifest = prepare_sources([source], out, cfg, progress=False)
        wall = time.perf_counter() - start
        split = manifest["splits"]["val"]
        rejects = len((out / "rejects.jsonl").read_text().splitlines())
        assert split["accepted"] + split["rejected"] == split["records_read"] and rejects == split["rejected"]
        result = {
            "records": split["records_read"],
            "accepted": split["accepted"],
            "rejected": split["rejected"],
            "rejected_by_reason": split["rejected_by_reason"],
            "wall_s": round(wall, 2),
            "structures_per_s": round(split["records_read"] / wall, 1),
            "workers": args.workers,
            "modalities": modalities,
            "cpu": cpu_name(),
            "shards": len(split["shards"]),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
