"""Entry points: `evaluate` (de novo / conditional samples, all stages) and `evaluate_csp` (structure prediction).

`evaluate` streams the samples in chunks through a process pool (`mmcrystal.evaluation.chunks`), writes every
finished chunk to ``<out>/chunks/`` under a content hash (an interrupted run continues where it stopped), then runs
the stages that need all samples (`mmcrystal.evaluation.aggregate`) and writes ``metrics.json``,
``per_structure.csv`` and ``report.md``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcrystal.evaluation.adherence import load_targets, target_for
from mmcrystal.evaluation.aggregate import (
    apply_hull,
    apply_uniqueness,
    distribution_metrics,
    merge_chunks,
    reference_features,
    summarise,
)
from mmcrystal.evaluation.chunks import STAGES, ChunkTask, EvalSettings, load_chunk, process_chunk, save_chunk
from mmcrystal.evaluation.cost import CostTracker
from mmcrystal.evaluation.csp import evaluate_csp
from mmcrystal.evaluation.distribution import cutoffs_for
from mmcrystal.evaluation.inputs import expand_paths, iter_sample_records, worker_pool
from mmcrystal.evaluation.matching import ReferenceIndex, load_or_build_index
from mmcrystal.evaluation.protocol import MatcherTolerances, ProtocolRecord, default_cache_dir
from mmcrystal.evaluation.report import make_plots, plot_xrd_examples, write_json, write_markdown, write_rows_csv
from mmcrystal.evaluation.stability import RelaxConfig
from mmcrystal.evaluation.validity import ValidityConfig

__all__ = ["EvaluationConfig", "evaluate", "run_evaluation", "evaluate_csp"]

log = logging.getLogger(__name__)


@dataclass
class EvaluationConfig:
    """All options of `evaluate` (see its docstring for each field)."""

    samples: str
    out: str
    reference: list[str] | None = None
    stages: tuple[str, ...] = STAGES
    dataset: str | None = "mp20"
    split: str | None = None
    train_split: str | None = None
    distribution_reference: list[str] | None = None
    distribution_reference_max: int | None = 2000
    hull_reference: list[str] | None = None
    hull_entries: str | None = None
    elemental_prototypes: bool = True
    conditions: str | None = None
    xrd_targets: str | None = None
    property_tolerance: float | None = None
    tolerances: MatcherTolerances = field(default_factory=MatcherTolerances)
    bucket_by_spacegroup: bool = False
    validity: ValidityConfig = field(default_factory=ValidityConfig)
    relax: RelaxConfig = field(default_factory=RelaxConfig)
    stability_thresholds: tuple[float, ...] = (0.0, 0.1)
    symprec: float = 0.1
    n_wasserstein: int | None = 1000
    seed: int | None = None
    diffusion_steps: int | None = None
    guidance_scale: float | None = None
    workers: int = 2
    chunk_size: int = 250
    cache_dir: str | None = None
    max_chunks: int | None = None
    plots: bool = True


def _chunk_stream(cfg: EvaluationConfig, settings: EvalSettings, targets: dict, extras: dict):
    batch, number = [], 0
    for record in iter_sample_records(cfg.samples):
        batch.append(record)
        if len(batch) == cfg.chunk_size:
            yield ChunkTask(number, batch, [target_for(targets, r) for r in batch], settings, **extras)
            batch, number = [], number + 1
    if batch:
        yield ChunkTask(number, batch, [target_for(targets, r) for r in batch], settings, **extras)


def _run_chunks(cfg, settings, targets, executor, extras, on_chunk_done) -> tuple[list[dict], dict[str, Any]]:
    """Compute or reuse every chunk; returns (results in chunk order, run info)."""
    results: dict[int, dict] = {}
    info = {"chunks_total": 0, "chunks_reused": 0, "chunks_computed": 0, "complete": True}
    pending: deque = deque()

    def finish(task: ChunkTask, digest: str, result: dict) -> None:
        save_chunk(cfg.out, task.number, digest, result)
        results[task.number] = result
        info["chunks_computed"] += 1
        log.info("chunk %d done (%d samples)", task.number, len(task.records))
        if on_chunk_done is not None:
            on_chunk_done(task.number)

    def drain(limit: int) -> None:
        while len(pending) > limit:
            done, _ = wait([f for f, _, _ in pending], return_when=FIRST_COMPLETED)
            for item in [p for p in pending if p[0] in done]:
                pending.remove(item)
                finish(item[1], item[2], item[0].result())

    for task in _chunk_stream(cfg, settings, targets, extras):
        info["chunks_total"] += 1
        digest = task.digest()
        cached = load_chunk(cfg.out, task.number, digest)
        if cached is not None:
            results[task.number] = cached
            info["chunks_reused"] += 1
            continue
        if cfg.max_chunks is not None and info["chunks_computed"] + len(pending) >= cfg.max_chunks:
            info["complete"] = False
            continue
        if executor is None:
            finish(task, digest, process_chunk(task))
        else:
            pending.append((executor.submit(process_chunk, task), task, digest))
            drain(2 * executor._max_workers)
    drain(0)
    return [results[k] for k in sorted(results)], info


def _resolve_property_model(spec):
    """An object with ``predict``, or ``"module:attribute"`` naming one (a class/factory is called with no args)."""
    if spec is None or hasattr(spec, "predict"):
        return spec
    module, _, attr = str(spec).partition(":")
    obj = getattr(importlib.import_module(module), attr)
    return obj if hasattr(obj, "predict") else obj()


def _build_index(cfg: EvaluationConfig, paths, cache_dir, executor) -> ReferenceIndex:
    return load_or_build_index(
        paths, cache_dir, cfg.tolerances.primitive_cell, cfg.bucket_by_spacegroup, 0.1, executor=executor
    )


def _protocol(cfg: EvaluationConfig, index: ReferenceIndex | None) -> ProtocolRecord:
    return ProtocolRecord(
        seed=cfg.seed,
        dataset=cfg.dataset,
        split=cfg.split,
        train_split=cfg.train_split,
        reference=index.describe() if index is not None else None,
        matcher=cfg.tolerances.as_dict(),
        bucketing="reduced formula" + (" + space group (symprec 0.1 Å)" if cfg.bucket_by_spacegroup else ""),
        validity=cfg.validity.as_dict(),
        stability_thresholds=list(cfg.stability_thresholds),
        diffusion_steps=cfg.diffusion_steps,
        guidance_scale=cfg.guidance_scale,
        stages=list(cfg.stages),
    )


def _stability_stage(cfg, rows, cache_dir, index, executor, cost, protocol) -> None:
    from mmcrystal.evaluation.hull import build_self_consistent_hull, load_user_hull
    from mmcrystal.evaluation.stability import ChgnetPotential

    protocol.energy_model = ChgnetPotential(cfg.relax).info()
    protocol.relaxation = cfg.relax.scoring_dict()  # {"relax": False} for single points
    if cfg.hull_entries:
        hull = load_user_hull(cfg.hull_entries)
    else:
        hull_index = index if not cfg.hull_reference else _build_index(cfg, cfg.hull_reference, cache_dir, executor)
        if hull_index is None:
            raise ValueError("the stability stage needs a hull: pass reference, hull_reference or hull_entries")
        systems = {frozenset(r["chemsys"].split("-")) for r in rows if "e_final" in r and not r.get("stability_error")}
        hull, calls = build_self_consistent_hull(
            hull_index, systems, cfg.relax, cache_dir, cfg.elemental_prototypes, executor
        )
        cost.add_hull(calls)
    protocol.hull = hull.describe()
    apply_hull(rows, hull, cfg.stability_thresholds)


def _distribution_stage(cfg, merged, cache_dir, executor, metrics, protocol) -> dict | None:
    paths = cfg.distribution_reference or cfg.reference
    if not paths:
        log.warning("distribution stage skipped: no distribution_reference or reference given")
        return None
    seed = cfg.seed if cfg.seed is not None else 0
    ref = reference_features(paths, cache_dir, cfg.distribution_reference_max, seed, executor=executor)
    cutoffs = cutoffs_for(cfg.dataset)
    metrics["distribution"] = distribution_metrics(
        merged["rows"], merged["struct_fp"], merged["comp_fp"], ref, cutoffs, cfg.n_wasserstein, seed
    )
    if "matching" in metrics:
        metrics["distribution"]["diversity"]["duplicate_rate"] = metrics["matching"]["duplicate_rate"]
    protocol.distribution = {
        "reference": metrics["distribution"]["reference"],
        "reference_max": cfg.distribution_reference_max,
        "coverage_cutoffs": {"struct": cutoffs[0], "comp": cutoffs[1]},
        "structure_fingerprint": "CrystalNN site fingerprints ('ops' preset rebuilt on pymatgen), site average",
        "composition_fingerprint": "Magpie-style, 19 pymatgen elemental properties x 6 statistics",
        "n_wasserstein": cfg.n_wasserstein,
    }
    return {"density": ref["density"], "n_atoms": ref["n_atoms"]}


def run_evaluation(
    cfg: EvaluationConfig,
    property_model=None,
    pattern_fn: Callable | None = None,
    on_chunk_done: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """`evaluate` with a config object, Python-only extras (a property-model object, an XRD pattern function,
    a per-chunk callback) and the same outputs. Returns the ``metrics.json`` payload."""
    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    cost = CostTracker()
    executor = worker_pool(cfg.workers)
    try:
        index = None
        if ("matching" in cfg.stages or "stability" in cfg.stages) and cfg.reference:
            with cost.stage("reference_index"):
                index = _build_index(cfg, cfg.reference, cache_dir, executor)
        settings = EvalSettings(
            stages=tuple(cfg.stages),
            validity=cfg.validity,
            tolerances=cfg.tolerances,
            by_spacegroup=cfg.bucket_by_spacegroup,
            index_path=str(cache_dir / "reference_index" / f"{index.hash}.pkl") if index is not None else None,
            index_hash=index.hash if index is not None else None,
            relax=cfg.relax,
            symprec=cfg.symprec,
            property_tolerance=cfg.property_tolerance,
        )
        extras = {"property_model": _resolve_property_model(property_model), "pattern_fn": pattern_fn}
        targets = load_targets(cfg.conditions, cfg.xrd_targets)
        with cost.stage("chunks"):
            results, run_info = _run_chunks(cfg, settings, targets, executor, extras, on_chunk_done)
        if not run_info["complete"]:
            log.warning("stopped after max_chunks=%s; rerun to continue", cfg.max_chunks)
            return {"run": run_info}
        payload = _aggregate(cfg, results, run_info, index, cache_dir, executor, cost, extras)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    payload["run"]["total_seconds"] = time.perf_counter() - start
    write_json(out / "metrics.json", payload)
    return payload


def _aggregate(cfg, results, run_info, index, cache_dir, executor, cost, extras) -> dict[str, Any]:
    merged = merge_chunks(results)
    rows = merged["rows"]
    model = extras.get("property_model")
    property_model_name = None if model is None else f"{type(model).__module__}.{type(model).__qualname__}"
    pattern_fn_name = getattr(extras.get("pattern_fn"), "__qualname__", None) or "default (see adherence docs)"
    protocol = _protocol(cfg, index)
    protocol.n_samples, protocol.n_parsed = len(rows), sum(r["status"] == "ok" for r in rows)
    cost.add_worker(merged["cpu"], merged["potential"])
    if "matching" in cfg.stages:
        with cost.stage("uniqueness"):
            run_info["uniqueness_buckets_fitted"] = apply_uniqueness(rows, merged["compacts"], cfg.tolerances, executor)
    if "stability" in cfg.stages:
        with cost.stage("hull"):
            _stability_stage(cfg, rows, cache_dir, index, executor, cost, protocol)
    if "adherence" in cfg.stages:
        protocol.adherence = {
            "symprec": cfg.symprec,
            "angle_tolerance": 5.0,
            "property_tolerance": cfg.property_tolerance,
            "property_model": property_model_name,
            "xrd_pattern_fn": pattern_fn_name,
        }
    metrics = summarise(rows, cfg.stages, cfg.stability_thresholds)
    reference_for_plots = None
    if "distribution" in cfg.stages:
        with cost.stage("distribution"):
            reference_for_plots = _distribution_stage(cfg, merged, cache_dir, executor, metrics, protocol)
    n_sun = {f"{t:g}": metrics.get("stability", {}).get(f"n_sun@{t:g}", 0) for t in cfg.stability_thresholds}
    metrics["cost"] = cost.summary(len(rows), n_sun if "stability" in cfg.stages else {}, cfg.relax.device or "auto")
    run_info["skipped"] = [
        {"id": r["id"], "location": r["location"], "reason": r.get("skip_reason")} for r in rows if r["status"] != "ok"
    ][:100]
    out = Path(cfg.out)
    write_rows_csv(out / "per_structure.csv", rows)
    plots = make_plots(out, rows, reference_for_plots) if cfg.plots else []
    if cfg.plots:
        plots += plot_xrd_examples(out, _valid_examples(cfg.samples, rows, 4))
    write_markdown(out / "report.md", metrics, protocol.as_dict(), plots)
    return {"metrics": metrics, "protocol": protocol.as_dict(), "run": run_info}


def _valid_examples(samples: str, rows: list[dict], k: int) -> list[tuple[str, Any]]:
    """The first ``k`` samples that passed every stage, parsed again, for the report's XRD panel."""
    from mmcrystal.evaluation.inputs import iter_sample_records, parse_sample

    wanted = {r["row"] for r in rows if r.get("status") == "ok" and r.get("valid", True)}
    out: list[tuple[str, Any]] = []
    for record in iter_sample_records(samples):
        if len(out) >= k:
            break
        if record.index in wanted:
            structure, _ = parse_sample(record)
            if structure is not None:
                out.append((record.id, structure))
    return out


def evaluate(
    samples: str,
    out: str,
    reference: list[str] | None = None,
    stages: list[str] | None = None,
    dataset: str | None = "mp20",
    split: str | None = None,
    train_split: str | None = None,
    distribution_reference: list[str] | None = None,
    distribution_reference_max: int | None = 2000,
    hull_reference: list[str] | None = None,
    hull_entries: str | None = None,
    elemental_prototypes: bool = True,
    conditions: str | None = None,
    xrd_targets: str | None = None,
    property_model: str | None = None,
    property_tolerance: float | None = None,
    ltol: float = 0.2,
    stol: float = 0.3,
    angle_tol: float = 5.0,
    bucket_by_spacegroup: bool = False,
    oxidation_states: str = "smact14",
    relax: bool = True,
    optimizer: str = "FIRE",
    fmax: float = 0.1,
    relax_steps: int = 500,
    device: str = "cpu",
    stability_thresholds: list[float] | None = None,
    symprec: float = 0.1,
    n_wasserstein: int | None = 1000,
    seed: int | None = None,
    diffusion_steps: int | None = None,
    guidance_scale: float | None = None,
    workers: int = 2,
    chunk_size: int = 250,
    cache_dir: str | None = None,
    max_chunks: int | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Evaluate generated crystals in stages and write metrics.json, per_structure.csv and report.md to ``out``.

    Stages run in order, each on the survivors of the previous one: validity (structural + SMACT), matching
    (uniqueness among samples, novelty against ``reference``), stability (CHGNet relaxation, E_hull, S.U.N.),
    adherence (targets from ``conditions`` / ``xrd_targets``), distribution (coverage, Wasserstein distances,
    diversity); cost is always reported. Finished chunks are kept in ``out/chunks``: rerunning the same command
    after an interruption recomputes only the missing chunks.

    Args:
        samples: Generated crystals: a folder of CIFs, a CSV with a ``cif`` column, an extxyz/ASE file, JSON lines,
            or a prepared shard folder; a glob is allowed.
        out: Output folder.
        reference: Training-set files for novelty (and the default hull and distribution reference); globs allowed.
        stages: Subset of validity, matching, stability, adherence, distribution (default: all).
        dataset: Dataset name, picks coverage cutoffs (mp20 0.4/10; carbon24, perov5 0.2/4) and is recorded.
        split: Split the distribution reference comes from (recorded).
        train_split: What the reference / training set is, in words (recorded).
        distribution_reference: Files the distribution metrics compare against (CDVAE: the test set); default
            ``reference``.
        distribution_reference_max: Compare with a seeded random subset of this many distribution-reference
            structures (fingerprints cost about 0.1 s each, computed once and cached); None uses all of them.
        hull_reference: Structures the self-consistent hull is built from (default ``reference``).
        hull_entries: JSON of pymatgen entries / PhaseDiagram to use as the hull instead (energies on CHGNet's
            MP2020-corrected scale).
        elemental_prototypes: Add ASE reference crystals of elements, scored with CHGNet, as hull end points.
        conditions: Table of targets per sample (``id`` or ``row`` + composition, chemical_system, crystal_system,
            space_group, property).
        xrd_targets: ``.npy`` (n_samples, n_bins) of target patterns on the XRD simulator's grid.
        property_model: ``"module:attribute"`` of an evaluation-only property model (``predict(structures) ->
            (mean, std)``); never the model that guided generation.
        property_tolerance: Absolute tolerance of property adherence (property units).
        ltol: StructureMatcher length tolerance (fraction).
        stol: StructureMatcher site tolerance (fraction of (V/N)^(1/3)).
        angle_tol: StructureMatcher angle tolerance (degrees).
        bucket_by_spacegroup: Also bucket by space group before fitting (faster, can miss distorted duplicates).
        oxidation_states: SMACT oxidation-state list (``smact14`` as CDVAE; ``icsd24``, ``icsd16``, ...).
        relax: Relax samples (and hull references) with CHGNet before taking energies; else single points.
        optimizer: ASE optimizer of the relaxation.
        fmax: Relaxation force threshold (eV/Å).
        relax_steps: Maximum relaxation steps.
        device: Torch device of the potential.
        stability_thresholds: E_hull thresholds in eV/atom (default 0 and 0.1).
        symprec: spglib tolerance (Å) for crystal-system / space-group adherence.
        n_wasserstein: Valid samples drawn (seeded) for Wasserstein distances (CDVAE: 1000); None uses all.
        seed: Seed of the generation run (recorded) and of subsampling here.
        diffusion_steps: Number of diffusion steps of the generation run (recorded).
        guidance_scale: Guidance scale of the generation run (recorded).
        workers: Worker processes (0 runs everything in this process).
        chunk_size: Samples per chunk (unit of parallel work and of resumption).
        cache_dir: Cache of reference indices, hull energies and reference fingerprints
            (default ``$MMCRYSTAL_CACHE`` or ``~/.cache/mmcrystal``).
        max_chunks: Compute at most this many new chunks, then stop (to split a long evaluation into sessions).
        plots: Write PNG plots with matplotlib when it is installed.

    Returns:
        The ``metrics.json`` payload: ``metrics`` per stage, ``protocol``, ``run`` (chunks reused/computed).
    """
    chosen = tuple(stages) if stages else STAGES
    unknown = set(chosen) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; choose from {STAGES}")
    cfg = EvaluationConfig(
        samples=samples,
        out=out,
        reference=expand_paths(reference) if reference else None,
        stages=chosen,
        dataset=dataset,
        split=split,
        train_split=train_split,
        distribution_reference=expand_paths(distribution_reference) if distribution_reference else None,
        distribution_reference_max=distribution_reference_max,
        hull_reference=expand_paths(hull_reference) if hull_reference else None,
        hull_entries=hull_entries,
        elemental_prototypes=elemental_prototypes,
        conditions=conditions,
        xrd_targets=xrd_targets,
        property_tolerance=property_tolerance,
        tolerances=MatcherTolerances(ltol=ltol, stol=stol, angle_tol=angle_tol),
        bucket_by_spacegroup=bucket_by_spacegroup,
        validity=ValidityConfig(oxidation_states=oxidation_states),  # type: ignore[arg-type]
        relax=RelaxConfig(relax=relax, optimizer=optimizer, fmax=fmax, steps=relax_steps, device=device),  # type: ignore[arg-type]
        stability_thresholds=tuple(stability_thresholds) if stability_thresholds else (0.0, 0.1),
        symprec=symprec,
        n_wasserstein=n_wasserstein,
        seed=seed,
        diffusion_steps=diffusion_steps,
        guidance_scale=guidance_scale,
        workers=workers,
        chunk_size=chunk_size,
        cache_dir=cache_dir,
        max_chunks=max_chunks,
        plots=plots,
    )
    return run_evaluation(cfg, property_model=property_model)
