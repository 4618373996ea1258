"""Throughput and peak memory of the crystal encoders on real MP-20 batches.

    .venv/bin/python scripts/bench_encoders.py --threads 1 2 --output benchmarks/results/encoders.md
    .venv/bin/python scripts/bench_encoders.py --device cuda --output benchmarks/results/encoders_gpu.md

Each (encoder, thread count) runs in a fresh subprocess so that peak memory is its own:
  - CPU: peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) at the end minus the same value
    after the data are loaded and before the encoder is built, i.e. the high-water mark added by building the
    model and running the steps (parameters, activations, gradients, allocator caches). tracemalloc does not see
    torch's allocations, hence RSS.
  - CUDA: `torch.cuda.max_memory_allocated()` over the timed steps.
Timed steps: forward + backward of a dummy loss (mean square of tokens and pooled) in train mode, after warm-up;
the forward-only column runs eval mode under no_grad. CHGNet's time includes its pymatgen graph building.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# name -> config as written in the report; `build_config` makes the same objects.
ENCODERS = {
    "cspnet": "CSPNetConfig()",
    "radius_graph": "RadiusGraphConfig()",
    "chgnet_frozen": "CHGNetConfig(freeze=True)",
    "chgnet_finetune": "CHGNetConfig(freeze=False)",
}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mp_20" / "test.csv.gz"


def load_batches(path: Path, batch_size: int, num_batches: int) -> list:
    """The first batch_size * num_batches MP-20 structures as `CrystalGraphInput` batches."""
    import warnings

    import pandas as pd
    from pymatgen.core import Structure

    from encoders import CrystalGraphInput

    frame = pd.read_csv(path, nrows=batch_size * num_batches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF rounding notices
        structures = [Structure.from_str(cif, fmt="cif") for cif in frame["cif"]]
    return [
        CrystalGraphInput.from_crystals(
            [(s.atomic_numbers, s.frac_coords, s.lattice.matrix) for s in structures[i : i + batch_size]]
        )
        for i in range(0, len(structures), batch_size)
    ]


def build_config(name: str):
    """The default config benchmarked under `name` (see ENCODERS)."""
    from encoders import CHGNetConfig, CSPNetConfig, RadiusGraphConfig

    return {
        "cspnet": CSPNetConfig(),
        "radius_graph": RadiusGraphConfig(),
        "chgnet_frozen": CHGNetConfig(freeze=True),
        "chgnet_finetune": CHGNetConfig(freeze=False),
    }[name]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(step, batches: list, repeats: int, device: str) -> float:
    """Crystals per second of `step` over `repeats` passes through `batches`."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            step(batch)
    _sync(device)
    return repeats * sum(int(b.num_atoms.numel()) for b in batches) / (time.perf_counter() - start)


def run_worker(args: argparse.Namespace) -> dict:
    """Measure one encoder in this process; returns a JSON-able row."""
    import torch

    from encoders import build_encoder

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    batches = [b.to(args.device) for b in load_batches(args.data, args.batch_size, args.num_batches)]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    encoder = build_encoder(build_config(args.worker)).to(args.device)
    trainable = any(p.requires_grad for p in encoder.parameters())

    def train_step(batch) -> None:
        out = encoder(batch)
        if trainable:
            (out.tokens.square().mean() + out.pooled.square().mean()).backward()
            encoder.zero_grad(set_to_none=True)

    def eval_step(batch) -> None:
        with torch.no_grad():
            encoder(batch)

    encoder.train()
    for batch in batches[: args.warmup]:
        train_step(batch)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    train_rate = _timed(train_step, batches, args.repeats, args.device) if trainable else None
    encoder.eval()
    eval_rate = _timed(eval_step, batches, args.repeats, args.device)
    if args.device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return {
        "encoder": args.worker,
        "config": ENCODERS[args.worker],
        "params": sum(p.numel() for p in encoder.parameters()),
        "threads": args.threads,
        "train_crystals_per_s": train_rate,
        "eval_crystals_per_s": eval_rate,
        "peak_mib": peak_mib,
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def to_markdown(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    import torch

    memory = "peak CUDA memory allocated" if args.device.startswith("cuda") else "peak RSS added (ru_maxrss delta)"
    lines = [
        "# Crystal encoder benchmark",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.date.today().isoformat()}",
        f"- hardware: {_cpu_model()}, {len(os.sched_getaffinity(0))} cores; device `{args.device}`",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}",
        f"- data: first {args.batch_size * args.num_batches} structures of MP-20 test ({args.data.name}), "
        f"batch {args.batch_size}, {args.repeats} timed pass(es) over {args.num_batches} batches after "
        f"{args.warmup} warm-up batch(es)",
        f"- memory: {memory}, in MiB, each row in a fresh process",
        "",
        f"| encoder | config | params | threads | fwd+bwd crystals/s | fwd-only crystals/s | {memory} MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        train = f"{r['train_crystals_per_s']:.0f}" if r["train_crystals_per_s"] else "n/a (frozen)"
        lines.append(
            f"| {r['encoder']} | `{r['config']}` | {r['params']:,} | {r['threads']} | {train} | "
            f"{r['eval_crystals_per_s']:.0f} | {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MP-20 csv(.gz) with a `cif` column")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-batches", type=int, default=4, help="distinct batches per timed pass")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the batches")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up batches")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch intra-op thread counts")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--output", type=Path, help="write the markdown report here")
    parser.add_argument("--worker", choices=list(ENCODERS), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.worker:
        args.threads = args.threads[0]
        print(json.dumps(run_worker(args)))
        return
    rows = []
    for name in args.encoders:
        for threads in args.threads:
            cmd = [sys.executable, __file__, "--worker", name, "--threads", str(threads), "--device", args.device]
            cmd += ["--data", str(args.data), "--batch-size", str(args.batch_size)]
            cmd += ["--num-batches", str(args.num_batches), "--repeats", str(args.repeats)]
            cmd += ["--warmup", str(args.warmup)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    python = sys.executable
    if python.startswith(os.getcwd()):
        python = os.path.relpath(python)
    command = " ".join([python, *sys.argv])
    report = to_markdown(rows, args, command)
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)


if __name__ == "__main__":
    main()
