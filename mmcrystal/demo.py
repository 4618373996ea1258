"""The main job, small enough for one CPU: real data -> validated shards -> batches -> a report.

``make demo`` runs ``mmcrystal demo``. With no network, point ``--mirror`` at a local copy of the public datasets
laid out as ``<mirror>/<dataset>/<file>`` (this repository's development machines have one at ../shared/data).
Each stage the project gains (alignment, diffusion, evaluation) joins this job as it lands.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

__all__ = ["demo"]

log = logging.getLogger(__name__)


def demo(
    workdir: str = "runs/demo",
    dataset: str = "mp_20",
    mirror: str | None = None,
    cache_dir: str | None = None,
    limit: int = 2000,
    workers: int = 2,
    batch_size: int = 64,
) -> dict:
    """Fetch a public dataset, prepare shards, stream one epoch of batches, and print what happened.

    Args:
        workdir: Folder for the prepared shards and reports.
        dataset: Registered dataset name (see ``mmcrystal datasets``).
        mirror: Local folder or base URL mirroring the datasets (no network needed), e.g. ../shared/data.
        cache_dir: Download cache (default: the user cache, ~/.cache/mmcrystal/datasets).
        limit: Records per split to prepare (keeps the demo short on a laptop).
        workers: Worker processes for preparation.
        batch_size: Crystals per batch when streaming the prepared training split.

    Returns:
        A summary dict (also printed).
    """
    from mmcrystal.data.datamodule import CrystalDataModule, DataConfig
    from mmcrystal.data.inspect import inspect_prepared
    from mmcrystal.data.prepare import PrepareConfig, dataset_sources, prepare_sources

    out = Path(workdir) / f"{dataset}_shards"
    t0 = time.perf_counter()
    sources = dataset_sources(dataset, mirror=mirror, cache_dir=cache_dir)
    manifest = prepare_sources(sources, out, PrepareConfig(samples_per_shard=500, workers=workers, limit=limit))
    t_prepare = time.perf_counter() - t0
    print(inspect_prepared(str(out)))
    train = "train" if "train" in manifest["splits"] else next(iter(manifest["splits"]))
    dm = CrystalDataModule(DataConfig(root=str(out), batch_size=batch_size, train_split=train))
    dm.setup()
    t1 = time.perf_counter()
    n_batches = n_crystals = n_atoms = 0
    for batch in dm.train_dataloader():
        n_batches += 1
        n_crystals += len(batch)
        n_atoms += int(batch.crystal.num_atoms.sum())
    t_load = time.perf_counter() - t1
    summary = {
        "dataset": dataset,
        "prepared": str(out),
        "prepare_s": round(t_prepare, 1),
        "records": sum(e["records_read"] for e in manifest["splits"].values()),
        "accepted": sum(e["accepted"] for e in manifest["splits"].values()),
        "train_split": train,
        "batches": n_batches,
        "crystals": n_crystals,
        "atoms": n_atoms,
        "load_crystals_per_s": round(n_crystals / max(t_load, 1e-9)),
    }
    print(
        f"\ndemo: prepared {summary['accepted']}/{summary['records']} records in {summary['prepare_s']} s; "
        f"streamed {n_batches} batches ({n_crystals} crystals, {n_atoms} atoms) of split {train!r} "
        f"at {summary['load_crystals_per_s']} crystals/s"
    )
    return summary
