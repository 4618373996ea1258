"""`mmcrystal prepare`: sources -> validated records -> derived modalities -> tar shards + manifest.

The plan is deterministic: records are read in source order, split by split, and cut into chunks of
``samples_per_shard`` raw records; chunk k of split s becomes ``s-0000k.tar`` plus a small ``s-0000k.json`` with
its counts, rejections and statistics. A chunk whose JSON records the same input digest and whose tar still has
the recorded hash is skipped, so re-running is idempotent and an interrupted run resumes where it stopped.
Every raw record ends up either in a shard or in ``rejects.jsonl`` with a reason; the manifest's counts add up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import platform
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmcrystal.data.derive import ModalityConfig
from mmcrystal.data.readers import SourceSpec, detect_kind, read_source
from mmcrystal.data.record import RawRecord, Rejection
from mmcrystal.data.shards import encode_record, sha256_file, write_shard
from mmcrystal.data.stats import DatasetStats
from mmcrystal.data.symmetry import annotate_symmetry
from mmcrystal.data.validation import ValidationConfig, validate_record

__all__ = ["PrepareConfig", "prepare", "prepare_sources", "parse_input"]

log = logging.getLogger(__name__)
MANIFEST_VERSION = 1


@dataclass
class PrepareConfig:
    """How records become shards.

    Attributes:
        samples_per_shard: Raw records per chunk (a shard holds the accepted ones of its chunk).
        workers: Worker processes; 0 runs everything in this process.
        modalities: Derived modalities to add: any of ``captions``, ``xrd``, ``micrograph``.
        limit: Read at most this many records per split (smoke runs); None reads everything.
        validation: Checks every record must pass.
        symprec: spglib tolerance (Å) for the space group and crystal system stored with every record.
        modality_config: Settings of the derived modalities (XRD grid, micrograph size, captions per record).
        exclude: Files listing ids to leave out of every split (a benchmark's test ids; CSV with a `material_id`
            or `id` column, or text with one id per line): each such record is rejected as `excluded_id`.
    """

    samples_per_shard: int = 1000
    workers: int = 2
    modalities: list[str] = field(default_factory=list)
    limit: int | None = None
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    symprec: float = 0.1
    modality_config: ModalityConfig = field(default_factory=ModalityConfig)
    exclude: list[str] = field(default_factory=list)


def read_id_list(path: str | Path) -> set[str]:
    """Ids from a CSV with a `material_id` (or `id`) column, or from text with one id per line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"exclude list {path} does not exist")
    if path.suffix in (".csv", ".gz") or path.name.endswith(".csv.gz"):
        import pandas as pd

        frame = pd.read_csv(path, nrows=0)
        column = next((c for c in ("material_id", "id") if c in frame.columns), None)
        if column is None:
            raise ValueError(f"exclude list {path} has no material_id or id column (has {list(frame.columns)[:8]})")
        return set(pd.read_csv(path, usecols=[column])[column].astype(str))
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def parse_input(text: str) -> SourceSpec:
    """``path`` or ``split=path`` -> `SourceSpec`."""
    split, sep, path = text.partition("=")
    if sep and "/" not in split and split:
        return SourceSpec(path=path, split=split)
    return SourceSpec(path=text)


# --------------------------------------------------------------------------------------------------- worker side
def _process_chunk(task: dict) -> dict:
    """Validate, derive and write one chunk. Runs in a worker process; never raises for a bad record."""
    import warnings

    warnings.filterwarnings("ignore")  # pymatgen CIF chatter; rejections carry the reasons that matter
    cfg: PrepareConfig = task["config"]
    accepted, rejections = [], []
    for raw in task["records"]:
        result = validate_record(raw, cfg.validation, task["split"])
        (rejections if isinstance(result, Rejection) else accepted).append(result)
    annotate_symmetry(accepted, cfg.symprec)
    if cfg.modalities:
        from mmcrystal.data.derive import derive_modalities

        derive_modalities(accepted, cfg.modalities, cfg.modality_config)
    stats = DatasetStats()
    samples = []
    for i, record in enumerate(accepted):
        stats.add_structure(record.structure, record.properties)
        samples.append((f"{task['name']}_{i:06d}", encode_record(record)))
    out_dir = Path(task["out_dir"])
    digest = write_shard(out_dir / f"{task['name']}.tar", samples)
    summary = {
        "name": task["name"],
        "split": task["split"],
        "input_digest": task["input_digest"],
        "records": len(task["records"]),
        "samples": len(samples),
        "sha256": digest,
        "rejects": [r.to_json() for r in rejections],
        "stats": stats.to_json(),
    }
    _write_json(out_dir / f"{task['name']}.json", summary)
    return summary


def _write_json(path: Path, payload) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------- planning
def _record_digest(h, raw: RawRecord) -> None:
    payload = raw.cif if raw.cif is not None else json.dumps(raw.structure_dict, sort_keys=True, default=str)
    if raw.structure is not None:
        payload = json.dumps(raw.structure.as_dict(), sort_keys=True, default=str)
    h.update(
        json.dumps(
            [raw.id, raw.location, payload, raw.properties, raw.captions, raw.error],
            sort_keys=True,
            default=str,
        ).encode()
    )


def _plan(sources: list[SourceSpec], cfg: PrepareConfig, config_digest: str):
    """Read every source; return chunk tasks per split and the duplicate-id rejections (decided here, globally)."""
    seen: dict[str, str] = {}
    duplicates: list[Rejection] = []
    by_split: dict[str, list[RawRecord]] = {}
    excluded: dict[str, str] = {}
    for listing in cfg.exclude:
        for ident in read_id_list(listing):
            excluded.setdefault(ident, str(listing))
    for spec in sources:
        split = spec.resolved_split()
        bucket = by_split.setdefault(split, [])
        for raw in read_source(spec):
            if cfg.limit is not None and len(bucket) >= cfg.limit:
                break
            if raw.id and str(raw.id) in excluded:
                duplicates.append(
                    Rejection(raw.id, raw.location, "excluded_id", f"listed in {excluded[str(raw.id)]}", split)
                )
                continue
            if raw.id and raw.id in seen and raw.error is None:
                duplicates.append(
                    Rejection(raw.id, raw.location, "duplicate_id", f"first seen at {seen[raw.id]}", split)
                )
                continue
            if raw.id:
                seen.setdefault(raw.id, raw.location)
            bucket.append(raw)
    tasks = []
    for split, records in by_split.items():
        for k, start in enumerate(range(0, len(records), cfg.samples_per_shard)):
            chunk = records[start : start + cfg.samples_per_shard]
            h = hashlib.sha256(config_digest.encode())
            for raw in chunk:
                _record_digest(h, raw)
            tasks.append(
                {
                    "name": f"{split}-{k:05d}",
                    "split": split,
                    "records": chunk,
                    "input_digest": h.hexdigest(),
                    "seed": k,
                }
            )
    return tasks, duplicates, {s: len(r) for s, r in by_split.items()}


def _is_done(out_dir: Path, task: dict) -> dict | None:
    meta_path, tar_path = out_dir / f"{task['name']}.json", out_dir / f"{task['name']}.tar"
    if not (meta_path.exists() and tar_path.exists()):
        return None
    try:
        summary = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return None
    if summary.get("input_digest") != task["input_digest"] or sha256_file(tar_path) != summary.get("sha256"):
        return None
    return summary


def _run_tasks(tasks: list[dict], out_dir: Path, cfg: PrepareConfig, progress: bool) -> list[dict]:
    from tqdm.auto import tqdm

    summaries: dict[str, dict] = {}
    todo = []
    for task in tasks:
        done = _is_done(out_dir, task)
        if done is not None:
            summaries[task["name"]] = done
        else:
            todo.append({**task, "out_dir": str(out_dir), "config": cfg})
    log.info("prepare: %d shard(s) planned, %d already done, %d to write", len(tasks), len(summaries), len(todo))
    bar = tqdm(total=sum(len(t["records"]) for t in todo), unit="rec", disable=not progress, desc="prepare")
    if cfg.workers <= 0 or len(todo) <= 1:
        for task in todo:
            summaries[task["name"]] = _process_chunk(task)
            bar.update(len(task["records"]))
    else:
        context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=context) as pool:
            pending, queue = set(), list(todo)
            while queue or pending:
                while queue and len(pending) < 2 * cfg.workers:  # bounded: raw records are not all pickled at once
                    pending.add(pool.submit(_process_chunk, queue.pop(0)))
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    summary = future.result()
                    summaries[summary["name"]] = summary
                    bar.update(summary["records"])
    bar.close()
    return [summaries[t["name"]] for t in tasks]


# --------------------------------------------------------------------------------------------------- manifest
def _source_record(spec: SourceSpec) -> dict:
    entry = {"path": spec.path, "split": spec.resolved_split(), "kind": spec.kind}
    path = Path(spec.path)
    if path.is_file():
        entry.update(sha256=sha256_file(path), bytes=path.stat().st_size)
    elif path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(child.relative_to(path).as_posix().encode() + sha256_file(child).encode())
        entry.update(sha256=h.hexdigest())
    return entry


def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("mmcrystal", "pymatgen", "numpy", "torch", "spglib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _build_manifest(sources, cfg, summaries, duplicates, read_counts) -> dict:
    from mmcrystal.data.derive import modality_metadata

    splits: dict[str, dict] = {}
    stats: dict[str, DatasetStats] = {}
    for summary in summaries:
        entry = splits.setdefault(
            summary["split"],
            {
                "records_read": read_counts.get(summary["split"], 0),
                "accepted": 0,
                "rejected": 0,
                "rejected_by_reason": {},
                "shards": [],
            },
        )
        entry["accepted"] += summary["samples"]
        entry["shards"].append(
            {"file": f"{summary['name']}.tar", "samples": summary["samples"], "sha256": summary["sha256"]}
        )
        stats.setdefault(summary["split"], DatasetStats()).merge(DatasetStats.from_json(summary["stats"]))
        for rej in summary["rejects"]:
            _count_reject(entry, rej["reason"])
    for rej in duplicates:
        entry = splits.setdefault(
            rej.split,
            {
                "records_read": read_counts.get(rej.split, 0),
                "accepted": 0,
                "rejected": 0,
                "rejected_by_reason": {},
                "shards": [],
            },
        )
        _count_reject(entry, rej.reason)
    for split, entry in splits.items():
        entry["records_read"] += sum(1 for d in duplicates if d.split == split)
    reference = stats.get("train") or next(iter(stats.values()), DatasetStats())
    return {
        "format": "mmcrystal-shards",
        "format_version": MANIFEST_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "software": _software(),
        "config": asdict(cfg),
        "sources": [_source_record(s) for s in sources],
        "splits": splits,
        "stats": {split: s.summary() for split, s in stats.items()},
        "normalization": {
            "reference_split": "train" if "train" in stats else next(iter(stats), None),
            **{k: v for k, v in reference.summary().items() if k in ("lattice", "properties")},
        },
        "property_names": sorted({p for s in stats.values() for p in s.properties}),
        "modalities": modality_metadata(cfg.modalities, cfg.modality_config),
    }


def _count_reject(entry: dict, reason: str) -> None:
    entry["rejected"] += 1
    entry["rejected_by_reason"][reason] = entry["rejected_by_reason"].get(reason, 0) + 1


def prepare_sources(
    sources: list[SourceSpec], out: str | Path, cfg: PrepareConfig | None = None, progress: bool = True
) -> dict:
    """Prepare shards from explicit sources; returns the manifest (also written to ``out/manifest.json``)."""
    cfg = cfg or PrepareConfig()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in sources:
        spec.kind = spec.kind if spec.kind != "auto" else detect_kind(spec.path)
    config_digest = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True, default=str).encode()).hexdigest()
    tasks, duplicates, read_counts = _plan(sources, cfg, config_digest)
    planned = {t["name"] for t in tasks}
    for stale in list(out_dir.glob("*-[0-9][0-9][0-9][0-9][0-9].tar")) + list(
        out_dir.glob("*-[0-9][0-9][0-9][0-9][0-9].json")
    ):
        if stale.stem not in planned:
            log.warning("prepare: removing stale shard %s (not part of this plan)", stale.name)
            stale.unlink()
    summaries = _run_tasks(tasks, out_dir, cfg, progress)
    with open(out_dir / "rejects.jsonl.tmp", "w") as handle:
        for rej in duplicates:
            handle.write(json.dumps(rej.to_json(), ensure_ascii=False) + "\n")
        for summary in summaries:
            for rej in summary["rejects"]:
                handle.write(json.dumps(rej, ensure_ascii=False) + "\n")
    os.replace(out_dir / "rejects.jsonl.tmp", out_dir / "rejects.jsonl")
    manifest = _build_manifest(sources, cfg, summaries, duplicates, read_counts)
    _write_json(out_dir / "manifest.json", manifest)
    for split, entry in manifest["splits"].items():
        log.info(
            "prepare: %s: %d read, %d accepted, %d rejected %s",
            split,
            entry["records_read"],
            entry["accepted"],
            entry["rejected"],
            entry["rejected_by_reason"],
        )
    return manifest


def prepare(
    out: str,
    inputs: list[str] | None = None,
    dataset: str | None = None,
    splits: list[str] | None = None,
    mirror: str | None = None,
    cache_dir: str | None = None,
    modalities: list[str] | None = None,
    samples_per_shard: int = 1000,
    workers: int = 2,
    limit: int | None = None,
    validation: ValidationConfig | None = None,
    modality_config: ModalityConfig | None = None,
    exclude: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Validate crystal records, derive modalities and write tar shards plus ``manifest.json`` and ``rejects.jsonl``.

    Args:
        out: Output folder (created). Re-running skips shards that are already complete.
        inputs: Source files/folders, each ``path`` or ``split=path`` (CSV with a ``cif`` column, CIF folder,
            extxyz, JSON lines, a saved Hugging Face dataset, or ``hf:<name>@split``).
        dataset: A registered dataset name (``mmcrystal download --list``); fetched into the cache first.
        splits: With ``dataset``: the splits to prepare (default: all the dataset has).
        mirror: With ``dataset``: a local folder or base URL laid out as ``<mirror>/<dataset>/<file>``.
        cache_dir: With ``dataset``: where downloads go (default: the user cache).
        modalities: Derived modalities to add (``captions``, ``xrd``, ``micrograph``).
        samples_per_shard: Raw records per shard.
        workers: Worker processes (0: in this process).
        limit: Read at most this many records per split.
        validation: Validation thresholds (``--validation.max_atoms 20`` ...).
        modality_config: Settings of derived modalities (``--modality_config.xrd.n_bins 2048`` ...).
        exclude: Files of ids to leave out of every split, e.g. a benchmark's test file (``--exclude+
            ../shared/data/mp_40_text/test.csv``): rejected as ``excluded_id``, counted and listed.
        progress: Show a progress bar.

    Returns:
        The manifest.
    """
    sources = [parse_input(item) for item in inputs or []]
    if dataset is not None:
        sources += dataset_sources(dataset, splits=splits, mirror=mirror, cache_dir=cache_dir)
    if not sources:
        raise ValueError("prepare needs inputs=[...] and/or dataset=NAME")
    cfg = PrepareConfig(samples_per_shard, workers, list(modalities or []), limit, validation or ValidationConfig())
    if modality_config is not None:
        cfg.modality_config = modality_config
    cfg.exclude = [str(p) for p in exclude or []]
    return prepare_sources(sources, out, cfg, progress=progress)


def dataset_sources(
    name: str, splits: list[str] | None = None, mirror: str | None = None, cache_dir: str | None = None
) -> list[SourceSpec]:
    """Fetch a registered dataset (or find it in a mirror) and describe its files as prepare sources."""
    from mmcrystal.data.download import download, resolve_dataset_files

    root = download(name, cache_dir=cache_dir, mirror=mirror, splits=splits)
    files = resolve_dataset_files(name, root)
    wanted = splits or list(files)
    missing = [s for s in wanted if s not in files]
    if missing:
        raise ValueError(f"dataset {name!r} has no split(s) {missing}; available: {sorted(files)}")
    return [SourceSpec(path=str(path), split=split) for split in wanted for path in files[split]]
