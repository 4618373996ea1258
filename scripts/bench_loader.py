"""Benchmark the shard loader: crystals/s collated into `MultimodalBatch`es from prepared shards.

    python scripts/bench_loader.py --root runs/mp20_val --batch-size 128 --workers 0 2 --epochs 3

Prepare the shards first (scripts/bench_prepare.py --out runs/mp20_val). Timing covers tar reading, decoding and
collation into tensors, i.e. everything a training step waits for.
"""

from __future__ import annotations

import argparse
import json
import time

from torch.utils.data import DataLoader

from mmcrystal.data.datamodule import load_manifest
from mmcrystal.data.loader import ShardDataset, ShardInfo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    manifest = load_manifest(args.root)
    shards = [ShardInfo(f"{args.root}/{s['file']}", s["samples"]) for s in manifest["splits"][args.split]["shards"]]
    for workers in args.workers:
        for training in (True, False):
            dataset = ShardDataset(
                shards, args.batch_size, training, shuffle_buffer=1000, property_names=manifest["property_names"]
            )
            loader = DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=False)
            rates = []
            for epoch in range(args.epochs):
                dataset.epoch = epoch
                start, n = time.perf_counter(), 0
                for batch in loader:
                    n += len(batch)
                rates.append(n / (time.perf_counter() - start))
            print(
                json.dumps(
                    {
                        "workers": workers,
                        "mode": "train" if training else "eval",
                        "crystals": n,
                        "crystals_per_s_best": round(max(rates)),
                        "crystals_per_s_mean": round(sum(rates) / len(rates)),
                    }
                )
            )


if __name__ == "__main__":
    main()
