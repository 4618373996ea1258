"""Distributed sampling: ranks write disjoint shards of one run, coordinated through files only.

Launch `mmcrystal sample` under torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or srun (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID); torchrun's variables win, so `WORLD_SIZE=1 RANK=0` forces one process inside a multi-task SLURM
allocation. No process group is needed:

  - rank r takes the batches k with k % world_size == r that no folder of the run has finished yet (whole batches:
    batch k is always seeded `batch_seed(seed, k)`, so the crystals do not depend on the world size);
  - it streams them to its shard `OUT/shards/rank<r>-of<W>/` (the `SampleWriter` layout, resumable);
  - rank 0, when done, waits (polling the folders, up to `merge_wait` seconds) until every batch is finished in some
    folder, then merges: complete batches are copied into OUT (same layout as a one-process run), `manifest.json`
    records which shard each came from, and the shards are deleted once the run is complete;
  - `mmcrystal sample --merge OUT` merges by hand (after a rank died, or with `merge_wait 0`).
An interrupted rank resumes its own shard, and a rerun with another world size skips every batch already finished
in OUT or in any shard, so nothing is generated twice.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mmcrystal.generation.writer import (
    SampleWriter,
    complete_batches,
    read_progress,
    read_records,
    sample_ids,
    write_manifest,
)

__all__ = [
    "RankInfo",
    "device_for_rank",
    "finished_batches",
    "merge_shards",
    "rank_batches",
    "rank_info",
    "shard_folder",
    "wait_for_batches",
]

log = logging.getLogger(__name__)

SHARDS = "shards"


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a distributed run.

    Attributes:
        rank: Global rank, 0..world_size - 1.
        world_size: Number of processes.
        local_rank: Rank on this node (picks the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in a world of {self.world_size} processes")


def rank_info(env: Mapping[str, str] | None = None) -> RankInfo:
    """The rank from torchrun (RANK/WORLD_SIZE/LOCAL_RANK), else SLURM (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID),
    else a single process."""
    env = os.environ if env is None else env
    for rank, world, local in (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")):
        if rank in env and world in env:
            try:
                return RankInfo(int(env[rank]), int(env[world]), int(env.get(local, 0)))
            except ValueError as exc:
                raise ValueError(f"bad {rank}={env[rank]!r} / {world}={env[world]!r}: {exc}") from None
    return RankInfo()


def device_for_rank(device: str, info: RankInfo) -> str:
    """`cuda` -> `cuda:<local_rank mod GPUs>` (one GPU per local rank); other devices unchanged."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    if device == "cuda" and info.world_size > 1:
        return f"cuda:{info.local_rank % torch.cuda.device_count()}"
    return device


def rank_batches(num_batches: int, info: RankInfo) -> list[int]:
    """Batches of rank r: k = r, r + W, r + 2W, ... (round robin, so ranks finish at about the same time)."""
    return list(range(info.rank, num_batches, info.world_size))


def shard_folder(out: str | Path, info: RankInfo) -> Path:
    """`OUT/shards/rank<r>-of<W>`."""
    return Path(out) / SHARDS / f"rank{info.rank:05d}-of{info.world_size:05d}"


def _run_folders(out: Path) -> list[Path]:
    """OUT and every shard folder of it that holds a progress.json."""
    shards = sorted(p.parent for p in (out / SHARDS).glob("*/progress.json"))
    return ([out] if (out / "progress.json").exists() else []) + shards


def _check_request(folder: Path, request: dict) -> None:
    progress = read_progress(folder)
    if progress is not None and progress["request"] != request:
        raise ValueError(f"{folder} holds samples of another request (see its progress.json); use a new OUT folder")


def finished_batches(out: str | Path, request: dict) -> dict[int, Path]:
    """Batch -> a folder (OUT or a shard) where it is complete; raises if a folder holds another request."""
    out, found = Path(out), {}
    ids = sample_ids(int(request["n"]), int(request["batch_size"]))
    for folder in _run_folders(out):
        _check_request(folder, request)
        for k in complete_batches(folder, ids):
            found.setdefault(k, folder)
    return found


def wait_for_batches(out: str | Path, request: dict, timeout_s: float, poll_s: float = 2.0) -> list[int]:
    """Poll until every batch is complete in some folder of the run, or `timeout_s` passes; -> missing batches."""
    num_batches = len(sample_ids(int(request["n"]), int(request["batch_size"])))
    deadline = time.monotonic() + max(float(timeout_s), 0.0)
    while True:
        missing = sorted(set(range(num_batches)) - set(finished_batches(out, request)))
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(poll_s)


def merge_shards(out: str | Path, request: dict | None = None) -> dict:
    """Copy every complete batch of `OUT/shards/*` into OUT, write `manifest.json`, and delete the shards once all
    batches are in OUT. The request comes from the folders' progress.json when not given (they must agree).

    Returns:
        OUT's progress summary, plus "merged_batches" (copied now) and "missing_batches".
    """
    out = Path(out)
    folders = _run_folders(out)
    if request is None:
        if not folders:
            raise FileNotFoundError(f"{out}: nothing to merge (no progress.json in it or in {out / SHARDS}/*)")
        request = read_progress(folders[0])["request"]
    for folder in folders:
        _check_request(folder, request)
    writer = SampleWriter(out, request)
    sources = {}
    for shard in (f for f in folders if f != out):
        records = read_records(shard)
        for k in sorted(complete_batches(shard, writer.ids, records) - writer.done):
            writer.copy_batch(k, shard, records)
            sources[k] = shard.name
    summary = writer.finish()
    manifest = write_manifest(writer, sources)
    if summary["complete"] and (out / SHARDS).exists():
        shutil.rmtree(out / SHARDS)
    if sources:
        log.info("sample: merged %d batches from %s into %s", len(sources), sorted(set(sources.values())), out)
    return {**summary, "merged_batches": sorted(sources), "missing_batches": manifest["missing_batches"]}
