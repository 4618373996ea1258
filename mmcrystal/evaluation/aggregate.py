"""Main-process half of an evaluation: merge chunk results, then the stages that need all samples at once
(uniqueness, E_hull against one hull, S.U.N., coverage and distances), and the aggregate numbers of every stage.

Denominators: validity rates are over all samples read (an unparsable sample is invalid); uniqueness and novelty
rates are over valid samples; stability rates over valid samples with an energy and a hull; S.U.N. rates over all
samples read (as MatterGen reports them) and also over valid samples.
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmcrystal.evaluation.distribution import coverage, diversity_indicators, wasserstein_metrics
from mmcrystal.evaluation.fingerprints import composition_fingerprint, structure_fingerprint
from mmcrystal.evaluation.hull import HullReference
from mmcrystal.evaluation.inputs import SampleRecord, iter_sample_records, parse_sample, records_hash
from mmcrystal.evaluation.matching import find_duplicates
from mmcrystal.evaluation.protocol import MatcherTolerances

__all__ = [
    "merge_chunks",
    "apply_uniqueness",
    "apply_hull",
    "summarise",
    "reference_features",
    "distribution_metrics",
]

log = logging.getLogger(__name__)
FEATURE_VERSION = 2


def merge_chunks(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate chunk results; rows sorted by input position."""
    merged: dict[str, Any] = {"rows": [], "compacts": {}, "scored": {}, "struct_fp": {}, "comp_fp": {}}
    cpu: dict[str, float] = defaultdict(float)
    potential: dict[str, float] = defaultdict(float)
    for result in results:
        merged["rows"] += result["rows"]
        for key in ("compacts", "scored", "struct_fp", "comp_fp"):
            merged[key].update(result[key])
        for k, v in result["cpu"].items():
            cpu[k] += v
        for k, v in result.get("potential", {}).items():
            potential[k] += v
    merged["rows"].sort(key=lambda r: r["row"])
    merged["cpu"], merged["potential"] = dict(cpu), dict(potential)
    return merged


def apply_uniqueness(rows: list[dict], compacts: dict, tolerances: MatcherTolerances, executor=None) -> int:
    """Set ``unique`` / ``duplicate_of`` on every matched row; returns the number of buckets that needed fits."""
    by_row = {r["row"]: r for r in rows}
    buckets: dict[str, list] = defaultdict(list)
    for row in sorted(compacts):
        key, c = compacts[row]
        buckets[key].append((row, c))
    crowded = [items for items in buckets.values() if len(items) > 1]
    for items in buckets.values():
        if len(items) == 1:
            by_row[items[0][0]].update(unique=True, duplicate_of="")
    task = functools.partial(find_duplicates, tolerances=tolerances)
    results = executor.map(task, crowded) if executor is not None and len(crowded) > 1 else map(task, crowded)
    for groups in results:
        for row, first in groups.items():
            by_row[row].update(unique=first is None, duplicate_of="" if first is None else by_row[first]["id"])
    return len(crowded)


def apply_hull(rows: list[dict], hull: HullReference, thresholds: Sequence[float]) -> None:
    """E_hull (eV/atom), hull status and ``stable@t`` flags for every row with a final energy."""
    from pymatgen.core import Composition

    for row in rows:
        if "e_final" not in row or row.get("stability_error"):
            continue
        composition = Composition(row["formula"])
        e_hull, status = hull.e_above_hull(composition, row["e_final"])
        row["hull_status"] = status
        row["hull_n_compounds"] = hull.n_compounds(el.symbol for el in composition.elements)
        if e_hull is not None:
            row["e_above_hull"] = e_hull
            for t in thresholds:
                row[f"stable@{t:g}"] = e_hull <= t


def _rate(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def _validity_summary(rows: list[dict]) -> dict[str, Any]:
    n = len(rows)
    parsed = [r for r in rows if r["status"] == "ok"]
    reasons = Counter(r.get("invalid_reason") or "" for r in parsed if not r.get("valid", True))
    return {
        "n_samples": n,
        "n_parsed": len(parsed),
        "n_skipped": n - len(parsed),
        "skip_reasons": dict(Counter(r.get("skip_reason", "").split(":")[0] for r in rows if r["status"] != "ok")),
        "struct_validity": sum(bool(r.get("struct_valid")) for r in parsed) / n if n else None,
        "comp_validity": sum(bool(r.get("comp_valid")) for r in parsed) / n if n else None,
        "validity": sum(bool(r.get("valid")) for r in parsed) / n if n else None,
        "invalid_reasons": dict(reasons),
    }


def _matching_summary(rows: list[dict]) -> dict[str, Any]:
    matched = [r for r in rows if "unique" in r]
    novel = [r for r in matched if "novel" in r]
    return {
        "n_evaluated": len(matched),
        "uniqueness": _rate([r["unique"] for r in matched]),
        "n_unique": sum(r["unique"] for r in matched),
        "duplicate_rate": _rate([not r["unique"] for r in matched]),
        "novelty": _rate([r["novel"] for r in novel]),
        "n_novel": sum(r["novel"] for r in novel),
        "unique_and_novel": _rate([r["unique"] and r["novel"] for r in novel]),
    }


def _stability_summary(rows: list[dict], thresholds: Sequence[float]) -> dict[str, Any]:
    scored = [r for r in rows if "e_final" in r and not r.get("stability_error")]
    with_hull = [r for r in scored if "e_above_hull" in r]
    e_hull = np.array([r["e_above_hull"] for r in with_hull])
    out: dict[str, Any] = {
        "n_attempted": sum(1 for r in rows if "stability_error" in r),
        "n_failed": sum(1 for r in rows if r.get("stability_error")),
        "n_scored": len(scored),
        "n_with_hull": len(with_hull),
        "n_no_hull": len(scored) - len(with_hull),
        "no_hull_reasons": dict(Counter(r["hull_status"] for r in scored if r.get("hull_status", "ok") != "ok")),
        "n_with_hull_but_no_competing_compound": sum(r.get("hull_n_compounds") == 0 for r in with_hull),
        "relax_steps_mean": _rate([r["relax_steps"] for r in scored if r.get("relax_steps")]),
        "relax_rmsd_mean": _rate([r["relax_rmsd"] for r in scored if "relax_rmsd" in r]),
        "relax_converged_rate": _rate([r["relax_converged"] for r in scored if "relax_converged" in r]),
    }
    if len(e_hull):
        out["e_above_hull"] = {
            "mean": float(e_hull.mean()),
            "median": float(np.median(e_hull)),
            "p10": float(np.percentile(e_hull, 10)),
            "p90": float(np.percentile(e_hull, 90)),
            "min": float(e_hull.min()),
            "max": float(e_hull.max()),
        }
    for t in thresholds:
        out[f"stable_rate@{t:g}"] = _rate([r[f"stable@{t:g}"] for r in with_hull])
    return out


def _sun(rows: list[dict], thresholds: Sequence[float]) -> dict[str, Any]:
    n, n_valid = len(rows), sum(bool(r.get("valid")) for r in rows)
    out: dict[str, Any] = {}
    for t in thresholds:
        flag = f"sun@{t:g}"
        for r in rows:
            if f"stable@{t:g}" in r and "unique" in r and "novel" in r:
                r[flag] = bool(r[f"stable@{t:g}"] and r["unique"] and r["novel"])
        count = sum(bool(r.get(flag)) for r in rows)
        out[f"n_sun@{t:g}"] = count
        out[f"sun_rate@{t:g}"] = count / n if n else None
        out[f"sun_rate_of_valid@{t:g}"] = count / n_valid if n_valid else None
    return out


def _adherence_summary(rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("composition_match", "chemsys_match", "crystal_system_match", "space_group_match"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = {"rate": _rate(values), "n": len(values)}
    for key in ("property_within_tol", "property_error", "xrd_cosine", "xrd_rwp"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = {"mean": _rate(values), "n": len(values)}
    return out


def summarise(rows: list[dict], stages: Sequence[str], thresholds: Sequence[float]) -> dict[str, Any]:
    """Aggregate numbers of the per-structure stages (distribution and cost are added by the runner)."""
    out: dict[str, Any] = {"validity": _validity_summary(rows)}
    if "matching" in stages:
        out["matching"] = _matching_summary(rows)
    if "stability" in stages:
        out["stability"] = {**_stability_summary(rows, thresholds), **_sun(rows, thresholds)}
    if "adherence" in stages:
        out["adherence"] = _adherence_summary(rows)
    return out


# ------------------------------------------------------------------------------------------ distribution stage
def _features_task(records: Sequence[SampleRecord], symprec: float | None) -> list[tuple | None]:
    out = []
    for record in records:
        structure, _ = parse_sample(record)
        if structure is None:
            out.append(None)
            continue
        try:
            out.append(
                (
                    structure_fingerprint(structure, symprec),
                    composition_fingerprint(structure.composition),
                    float(structure.density),
                    len(structure.composition.elements),
                    len(structure),
                )
            )
        except Exception:  # noqa: BLE001 - a reference whose fingerprint fails is left out (counted)
            out.append(None)
    return out


def reference_features(
    paths: str | Sequence[str],
    cache_dir: str | Path,
    max_structures: int | None = None,
    seed: int = 0,
    fingerprint_symprec: float | None = 0.01,
    executor=None,
    chunk_size: int = 100,
) -> dict[str, Any]:
    """Fingerprints, densities and element counts of a reference set (optionally a seeded random subset),
    cached under a content hash of the records used."""
    records = list(iter_sample_records(paths))
    if max_structures is not None and len(records) > max_structures:
        keep = np.sort(np.random.default_rng(seed).choice(len(records), max_structures, replace=False))
        records = [records[i] for i in keep]
    digest = records_hash(records, "reference-features", FEATURE_VERSION, fingerprint_symprec)
    path = Path(cache_dir) / "reference_features" / f"{digest}.pkl"
    if path.exists():
        with open(path, "rb") as handle:
            return pickle.load(handle)
    task = functools.partial(_features_task, symprec=fingerprint_symprec)
    chunks = [records[i : i + chunk_size] for i in range(0, len(records), chunk_size)]
    results = executor.map(task, chunks) if executor is not None else map(task, chunks)
    items = [x for part in results for x in part if x is not None]
    features = {
        "struct_fp": np.array([x[0] for x in items]),
        "comp_fp": np.array([x[1] for x in items]),
        "density": np.array([x[2] for x in items]),
        "n_elements": np.array([x[3] for x in items]),
        "n_atoms": np.array([x[4] for x in items]),
        "n_records": len(records),
        "n_failed": len(records) - len(items),
        "hash": digest,
        "sources": [str(p) for p in ([paths] if isinstance(paths, str) else paths)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".tmp"), "wb") as handle:
        pickle.dump(features, handle, protocol=pickle.HIGHEST_PROTOCOL)
    path.with_suffix(".tmp").replace(path)
    return features


def distribution_metrics(
    rows: list[dict],
    struct_fp: dict,
    comp_fp: dict,
    reference: dict[str, Any],
    cutoffs: tuple[float, float],
    n_wasserstein: int | None = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Coverage, Wasserstein distances (on up to ``n_wasserstein`` random valid samples) and diversity."""
    have = sorted(set(struct_fp) & set(comp_fp))
    gen_s = np.array([struct_fp[r] for r in have]).reshape(len(have), -1)
    gen_c = np.array([comp_fp[r] for r in have]).reshape(len(have), -1)
    out: dict[str, Any] = {
        "coverage": coverage(gen_s, gen_c, reference["struct_fp"], reference["comp_fp"], *cutoffs, len(rows))
    }
    valid = [r for r in rows if r.get("valid", r["status"] == "ok") and r["status"] == "ok"]
    if n_wasserstein is not None and len(valid) > n_wasserstein:
        picks = np.random.default_rng(seed).choice(len(valid), n_wasserstein, replace=False)
        valid = [valid[i] for i in sorted(picks)]
    out["wasserstein"] = wasserstein_metrics(
        [r["density"] for r in valid], reference["density"], [r["n_elements"] for r in valid], reference["n_elements"]
    )
    out["wasserstein"]["n_samples"] = len(valid)
    out["diversity"] = diversity_indicators(gen_s, seed=seed)
    out["diversity_reference"] = diversity_indicators(reference["struct_fp"], seed=seed)
    out["reference"] = {k: reference[k] for k in ("n_records", "n_failed", "hash", "sources")}
    return out
