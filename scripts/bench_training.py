"""Training throughput (crystals/s, global) and data-wait fraction of alignment and diffusion, on 1 and N processes.

Each configuration runs ``mmcrystal <stage> fit`` through torchrun (``--nproc-per-node N``; gloo DDP on CPU, NCCL on
CUDA) for a fixed number of optimiser steps, with validation and checkpoints off; rank 0 reports
`mmcrystal.callbacks.ThroughputMonitor`'s summary over the steps after a warm-up. The batch size is per process, so
N processes train on N times the global batch (weak scaling).

    python scripts/bench_training.py --root runs/mp20_align --procs 1 2 --steps 40           # CPU, ~10 min
    python scripts/bench_training.py --root runs/mp20_align --device cuda --procs 1 --steps 200 --batch-size 128

CPU sizes (``--device cpu``): alignment = configs/align/cpu_benchmark.yaml (CSPNet 128x3, frozen MiniLM, XRD
transformer); diffusion = configs/diffusion/text_mp40.yaml shrunk to a 128-wide, 4-layer denoiser. On CUDA both
recipes run at their own (GPU) sizes with bf16-mixed. Every process uses one intra-op thread on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"align": "configs/align/cpu_benchmark.yaml", "diffuse": "configs/diffusion/text_mp40.yaml"}
CPU_DIFFUSION = [  # the GPU recipe at CPU size
    "--model.denoiser.hidden_dim", "128", "--model.denoiser.num_layers", "4", "--model.denoiser.num_freqs", "16",
    "--model.denoiser.time_dim", "64", "--model.denoiser.num_heads", "4", "--model.denoiser.max_atoms", "24",
    "--model.conditions.cond_dim", "128", "--model.num_atoms.hidden_dim", "128", "--model.num_atoms.max_atoms", "24",
]  # fmt: skip


def _stage_args(args, stage: str) -> list[str]:
    common = [
        "fit", "-c", RECIPES[stage], "--data.root", args.root, "--data.batch_size", str(args.batch_size),
        "--data.num_workers", str(args.workers), "--trainer.max_steps", str(args.steps), "--trainer.max_epochs", "-1",
        "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0", "--trainer.enable_checkpointing",
        "false", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--seed_everything", "0",
        "--trainer.default_root_dir", str(Path(args.result).parent),  # the export after fit lands there
    ]  # fmt: skip
    if stage == "diffuse":
        common += ["--data.fields", "[z, frac, lattice]"]
        common += CPU_DIFFUSION if args.device == "cpu" else []
    if args.device == "cuda":
        common += ["--trainer.accelerator", "gpu", "--trainer.precision", args.precision]
    else:
        common += ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]
    return common


def _gpu_utilisation(samples: list[float], stop: threading.Event) -> None:
    import torch

    while not stop.wait(0.5):
        try:
            samples.append(float(torch.cuda.utilization()))
        except Exception:  # noqa: BLE001 - needs pynvml; utilisation is then not reported
            return


def worker(args) -> None:
    """One torchrun process: run the stage, rank 0 writes the summary."""
    import torch

    if args.device == "cpu":
        torch.set_num_threads(1)
    from mmcrystal.callbacks import ThroughputMonitor
    from mmcrystal.train import run_stage

    world = int(os.environ.get("WORLD_SIZE", "1"))
    extra = ["--trainer.devices", str(world)] + (["--trainer.strategy", "ddp"] if world > 1 else [])
    utilisation: list[float] = []
    stop = threading.Event()
    if args.device == "cuda":
        threading.Thread(target=_gpu_utilisation, args=(utilisation, stop), daemon=True).start()
    start = time.perf_counter()
    cli = run_stage(args.stage, _stage_args(args, args.stage) + extra)
    wall = time.perf_counter() - start
    stop.set()
    if cli.trainer.global_rank != 0:
        return
    monitor = next(c for c in cli.trainer.callbacks if isinstance(c, ThroughputMonitor))
    summary = monitor.summary()
    summary.update(
        stage=args.stage, processes=world, device=args.device, batch_per_process=args.batch_size,
        global_batch=args.batch_size * world, steps=cli.trainer.global_step, fit_wall_s=wall,
        parameters=sum(p.numel() for p in cli.model.parameters()),
        trainable=sum(p.numel() for p in cli.model.parameters() if p.requires_grad),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        precision=args.precision if args.device == "cuda" else "32-true",
    )  # fmt: skip
    if utilisation:
        summary["gpu_utilisation_mean"] = sum(utilisation) / len(utilisation)
    Path(args.result).write_text(json.dumps(summary))


def drive(args) -> list[dict]:
    rows = []
    for stage in args.stages:
        for procs in args.procs:
            with tempfile.TemporaryDirectory() as tmp:
                result = Path(tmp) / "result.json"
                command = [
                    sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
                    __file__, "--worker", "--stage", stage, "--result", str(result), "--root", args.root,
                    "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                    "--device", args.device, "--precision", args.precision,
                ]  # fmt: skip
                env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.device == "cpu" else dict(os.environ)
                started = time.perf_counter()
                done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
                if done.returncode != 0 or not result.exists():
                    print(done.stdout[-3000:], done.stderr[-6000:], file=sys.stderr)
                    raise SystemExit(f"{stage} on {procs} process(es) failed ({done.returncode})")
                row = json.loads(result.read_text())
                row["total_wall_s"] = time.perf_counter() - started
            rows.append(row)
            print(
                f"{stage:8s} procs={procs} global batch={row['global_batch']:4d}  "
                f"{row['samples_per_sec']:8.1f} crystals/s  data wait {100 * row['data_wait_fraction']:5.1f} %  "
                f"({row['batches']:.0f} timed batches, fit {row['fit_wall_s']:.0f} s, total {row['total_wall_s']:.0f} s)",
                flush=True,
            )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="runs/mp20_align", help="prepared shards with captions and XRD")
    parser.add_argument("--stages", nargs="+", default=["align", "diffuse"], choices=sorted(RECIPES))
    parser.add_argument("--procs", nargs="+", type=int, default=[1, 2], help="process counts to compare")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per run (the first 5 are warm-up)")
    parser.add_argument("--batch-size", type=int, default=32, help="crystals per process and step")
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes per training process")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default="bf16-mixed", help="CUDA precision (CPU runs use 32-true)")
    parser.add_argument("--out", help="write all rows as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.root = str(Path(args.root).resolve())
    if args.worker:
        os.chdir(REPO)  # recipes are relative to the repository
        worker(args)
        return
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, device {args.device}", flush=True)  # fmt: skip
    rows = drive(args)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
