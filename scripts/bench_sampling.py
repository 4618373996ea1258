"""Sampling throughput of a trained decoder: structures/s at the full and the few-step setting.

    python scripts/bench_sampling.py --model runs/demo/decoder --n 32 --steps 1000 50 --prompt "A cubic crystal of NaCl"

Match rates at each setting come from `mmcrystal evaluate-csp` on a CSP-trained model; this script measures speed.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mmcrystal.generate import CrystalGenerator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 50])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    generator = CrystalGenerator.from_pretrained(args.model, device=args.device)
    for steps in args.steps:
        start = time.perf_counter()
        structures = generator.sample(prompt=args.prompt, n=args.n, steps=steps, batch_size=args.batch_size, seed=0)
        wall = time.perf_counter() - start
        atoms = sum(len(s) for s in structures)
        print(json.dumps({"steps": steps, "n": len(structures), "atoms": atoms, "wall_s": round(wall, 2),
                          "structures_per_s": round(len(structures) / wall, 3), "device": args.device,
                          "threads": torch.get_num_threads()}))  # fmt: skip


if __name__ == "__main__":
    main()
