"""Crystal structure prediction (CSP) metrics: match rate, RMSE, METRe and cRMSE.

Classic metrics (CDVAE / DiffCSP): for target i with generated samples g_i1..g_in, a pair matches when
``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3).get_rms_dist(g, target)`` is not None; its RMSE is the first
element of that result, the RMS displacement normalised by (V / N)^(1/3).

- match rate @ k=1: fraction of targets whose first sample matches; RMSE @ k=1: mean over the matched targets;
- match rate @ k=n: fraction of targets matched by any of their n samples; RMSE @ k=n: mean over matched targets
  of the best (smallest) RMSE among their samples.

Validity gate (``validity_gate``): DiffCSP counts a pair only when both the sample and the target are valid
(SMACT and structural validity, ``"cdvae"``); a target that fails SMACT can then never be matched, which caps the
match rate below 100 % even for perfect predictions (MP-20 test: about 91 %). ``"structural"`` only requires
structural validity of both; ``"none"`` gates nothing.

Metrics proposed in Martirossyan et al., "All that structure matches does not glitter" (arXiv 2509.12178), as
summarised in docs/EVALUATION.md; written from that summary (the paper text was not available offline), so details
may differ from the paper's own code:

- METRe (match every generated structure against all references): all gated samples, of every target, are
  matched against every reference (target) structure of the same reduced formula, not only against their own
  target. Each sample may be credited to at most one reference, chosen by a one-to-one assignment per formula
  that first maximises the number of matched references and then minimises their summed RMSE
  (``scipy.optimize.linear_sum_assignment``). METRe = matched references / references; ``metre_rmse`` is the mean
  RMSE over the assigned pairs. Polymorphs and duplicates in the test set (Carbon-24 is about 40 % unique) no
  longer penalise a sample that reproduces a different, equally valid reference of its composition.
- cRMSE (RMSE that penalises non-matches): the mean over ALL targets of the k=1 RMSE, where a target without a
  match contributes ``stol`` (the largest normalised RMS the matcher accepts). A model cannot lower it by
  matching only easy targets; it equals the classic RMSE when every target matches. Also given for k=n.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from mmcrystal.evaluation.matching import Compact, compact, from_compact
from mmcrystal.evaluation.protocol import CSP_TOLERANCES, MatcherTolerances
from mmcrystal.evaluation.validity import ValidityConfig, validity_record

__all__ = ["csp_metrics", "rms_pairs", "ValidityGate"]

log = logging.getLogger(__name__)
ValidityGate = Literal["cdvae", "structural", "none"]
_NO_MATCH_COST = 1e6  # assignment cost of an unmatched pair: larger than any sum of RMSEs


def _passes(structure, gate: ValidityGate, config: ValidityConfig) -> bool:
    if structure is None:
        return False
    if gate == "none":
        return True
    record = validity_record(structure, config)
    return record["valid"] if gate == "cdvae" else record["struct_valid"]


def _gate_task(items: Sequence[Compact | None], gate: ValidityGate, config: ValidityConfig) -> list[bool]:
    """Worker task: the validity gate of compact structures."""
    return [_passes(None if c is None else from_compact(c), gate, config) for c in items]


def _gate_all(structures: Sequence, gate: ValidityGate, config: ValidityConfig, executor, chunk: int = 500):
    if gate == "none":
        return [s is not None for s in structures]
    items = [None if s is None else compact(s) for s in structures]
    task = functools.partial(_gate_task, gate=gate, config=config)
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    results = executor.map(task, chunks) if executor is not None else map(task, chunks)
    return [flag for part in results for flag in part]


def rms_pairs(pairs: Sequence[tuple[Compact, Compact]], tolerances: MatcherTolerances) -> list[float | None]:
    """Worker task: normalised RMS of ``get_rms_dist(generated, reference)`` per pair; None when no match."""
    matcher = tolerances.matcher()
    out: list[float | None] = []
    for gen, ref in pairs:
        g, r = from_compact(gen), from_compact(ref)
        if g.composition.reduced_formula != r.composition.reduced_formula:
            out.append(None)  # fit() refuses different compositions; get_rms_dist may raise on them
            continue
        try:
            result = matcher.get_rms_dist(g, r)
        except Exception:  # noqa: BLE001 - as DiffCSP: a matcher exception is a non-match
            result = None
        out.append(None if result is None else float(result[0]))
    return out


def _map_pairs(pairs: list[tuple[Compact, Compact]], tolerances, executor, chunk: int = 200) -> list[float | None]:
    task = functools.partial(rms_pairs, tolerances=tolerances)
    chunks = [pairs[i : i + chunk] for i in range(0, len(pairs), chunk)]
    results = executor.map(task, chunks) if executor is not None else map(task, chunks)
    return [x for part in results for x in part]


def _metre(gen_items, ref_items, rms_of) -> tuple[int, list[float], dict[int, tuple[int, float]]]:
    """One-to-one assignment per formula bucket; returns (matched refs, RMSEs, ref -> (gen slot, rms))."""
    from scipy.optimize import linear_sum_assignment

    gen_by_key: dict[str, list[int]] = defaultdict(list)
    for slot, (key, _) in enumerate(gen_items):
        gen_by_key[key].append(slot)
    matched, rmses, assignment = 0, [], {}
    refs_by_key: dict[str, list[int]] = defaultdict(list)
    for j, (key, _) in enumerate(ref_items):
        refs_by_key[key].append(j)
    for key, refs in refs_by_key.items():
        gens = gen_by_key.get(key, [])
        if not gens:
            continue
        cost = np.full((len(refs), len(gens)), _NO_MATCH_COST)
        for a, j in enumerate(refs):
            for b, slot in enumerate(gens):
                rms = rms_of.get((slot, j))
                if rms is not None:
                    cost[a, b] = rms
        rows, cols = linear_sum_assignment(cost)
        for a, b in zip(rows, cols, strict=True):
            if cost[a, b] < _NO_MATCH_COST:
                matched += 1
                rmses.append(float(cost[a, b]))
                assignment[refs[a]] = (gens[b], float(cost[a, b]))
    return matched, rmses, assignment


def csp_metrics(
    generated: Sequence[Sequence[Any]],
    targets: Sequence[Any],
    tolerances: MatcherTolerances = CSP_TOLERANCES,
    validity_gate: ValidityGate = "cdvae",
    validity: ValidityConfig | None = None,
    executor=None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """CSP metrics of samples against their targets (module docstring).

    Args:
        generated: For each target, its samples in generation order (None for a sample that failed to parse).
        targets: Target structures, same length as ``generated``.
        tolerances: StructureMatcher tolerances (CDVAE CSP defaults).
        validity_gate: ``cdvae`` (sample and target SMACT + structurally valid), ``structural`` or ``none``.
        validity: Validity thresholds for the gate.
        executor: Optional executor for the pairwise fits.

    Returns:
        (aggregate metrics, per-target rows).
    """
    if len(generated) != len(targets):
        raise ValueError(f"{len(generated)} sample lists for {len(targets)} targets")
    cfg = validity or ValidityConfig()
    ref_ok = _gate_all(targets, validity_gate, cfg, executor)
    flat = [s for samples in generated for s in samples]
    gen_ok = iter(_gate_all(flat, validity_gate, cfg, executor))
    ref_items = [
        (t.composition.reduced_formula if t is not None else "", compact(t) if ok else None)
        for t, ok in zip(targets, ref_ok, strict=True)
    ]
    gen_items, owner = [], []  # flat list of gated samples: (key, compact), owner = (target index, sample index)
    for i, samples in enumerate(generated):
        for k, s in enumerate(samples):
            if next(gen_ok):
                gen_items.append((s.composition.reduced_formula, compact(s)))
                owner.append((i, k))
    pair_index = _candidate_pairs(gen_items, ref_items, owner)
    values = _map_pairs([(gen_items[g][1], ref_items[j][1]) for g, j in pair_index], tolerances, executor)
    rms_of = dict(zip(pair_index, values, strict=True))
    rows = _per_target(generated, targets, gen_items, owner, rms_of)
    metre_matched, metre_rmses, assignment = _metre(gen_items, ref_items, rms_of)
    for j, (slot, rms) in assignment.items():
        rows[j].update(metre_matched=True, metre_rms=rms, metre_sample=f"{owner[slot][0]}:{owner[slot][1]}")
    summary = _summarise(rows, tolerances, metre_matched, metre_rmses)
    summary.update(validity_gate=validity_gate, n_targets_gated_out=int(len(targets) - sum(ref_ok)))
    return summary, rows


def _candidate_pairs(gen_items, ref_items, owner) -> list[tuple[int, int]]:
    """(sample slot, reference index) pairs with the same reduced formula and a gated reference."""
    refs_by_key: dict[str, list[int]] = defaultdict(list)
    for j, (key, c) in enumerate(ref_items):
        if c is not None:
            refs_by_key[key].append(j)
    pairs = set()
    for slot, (key, _) in enumerate(gen_items):
        for j in refs_by_key.get(key, ()):
            pairs.add((slot, j))
    return sorted(pairs)


def _per_target(generated, targets, gen_items, owner, rms_of) -> list[dict[str, Any]]:
    slots_of: dict[int, list[tuple[int, int]]] = defaultdict(list)  # target -> [(sample index, slot)]
    for slot, (i, k) in enumerate(owner):
        slots_of[i].append((k, slot))
    rows = []
    for i in range(len(targets)):
        own = [(k, rms_of.get((slot, i))) for k, slot in sorted(slots_of.get(i, []))]
        first = next((rms for k, rms in own if k == 0), None)
        matched = [rms for _, rms in own if rms is not None]
        rows.append(
            {
                "target": i,
                "n_samples": len(generated[i]),
                "n_gated": len(own),
                "match_k1": first is not None,
                "rms_k1": first,
                "match_kn": bool(matched),
                "rms_kn": min(matched) if matched else None,
                "metre_matched": False,
                "metre_rms": None,
            }
        )
    return rows


def _summarise(rows, tolerances: MatcherTolerances, metre_matched: int, metre_rmses: list[float]) -> dict[str, Any]:
    n = max(len(rows), 1)

    def mean(values) -> float | None:
        return float(np.mean(values)) if values else None

    k1 = [r["rms_k1"] for r in rows if r["rms_k1"] is not None]
    kn = [r["rms_kn"] for r in rows if r["rms_kn"] is not None]
    penalty = tolerances.stol
    return {
        "n_targets": len(rows),
        "k": max((r["n_samples"] for r in rows), default=0),
        "match_rate_k1": len(k1) / n,
        "rmse_k1": mean(k1),
        "match_rate_kn": len(kn) / n,
        "rmse_kn": mean(kn),
        "metre": metre_matched / n,
        "metre_rmse": mean(metre_rmses),
        "crmse_k1": float(np.mean([r["rms_k1"] if r["rms_k1"] is not None else penalty for r in rows]))
        if rows
        else None,
        "crmse_kn": float(np.mean([r["rms_kn"] if r["rms_kn"] is not None else penalty for r in rows]))
        if rows
        else None,
        "crmse_penalty": penalty,
        "tolerances": tolerances.as_dict(),
    }


def _group_generated(gen_records, gen_structures, target_ids: list[str], separator: str) -> list[list]:
    """Samples per target: by id (``<target id>`` or ``<target id><separator><k>``), else by order when every
    id is unknown and the sample count is a multiple of the target count (sample i -> target i mod T)."""
    position = {t: i for i, t in enumerate(target_ids)}
    groups: list[list] = [[] for _ in target_ids]
    keyed = [(position.get(r.id.split(separator)[0]), s) for r, s in zip(gen_records, gen_structures, strict=True)]
    if any(i is not None for i, _ in keyed):
        for i, s in keyed:
            if i is None:
                log.warning("generated sample with an id matching no target was ignored")
                continue
            groups[i].append(s)
        return groups
    if target_ids and len(keyed) % len(target_ids) == 0:
        for n, (_, s) in enumerate(keyed):
            groups[n % len(target_ids)].append(s)
        return groups
    raise ValueError("cannot pair generated samples with targets: no id matches and counts do not divide")


def evaluate_csp(
    generated: str,
    targets: str,
    out: str,
    k: int | None = None,
    validity_gate: str = "cdvae",
    ltol: float = 0.3,
    stol: float = 0.5,
    angle_tol: float = 10.0,
    id_separator: str = "__",
    dataset: str | None = None,
    split: str | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """CSP metrics (match rate and RMSE at k=1 and k=n, METRe, cRMSE) of generated structures against targets.

    Writes ``csp_metrics.json`` (metrics + protocol) and ``csp_per_target.csv`` to ``out``.

    Args:
        generated: Generated structures (any source `evaluate` reads); sample ids are ``<target id>`` or
            ``<target id><id_separator><k>``; if no id matches a target, sample i belongs to target i mod T.
        targets: Target structures (e.g. ``test.csv.gz``).
        out: Output folder.
        k: Use at most the first k samples of each target (default: all).
        validity_gate: ``cdvae`` (DiffCSP: sample and target SMACT + structurally valid), ``structural``, ``none``.
        ltol: StructureMatcher length tolerance (CDVAE CSP: 0.3).
        stol: StructureMatcher site tolerance (CDVAE CSP: 0.5); also the cRMSE penalty.
        angle_tol: StructureMatcher angle tolerance in degrees (CDVAE CSP: 10).
        id_separator: Separator between the target id and the sample number in generated ids.
        dataset: Dataset name (recorded).
        split: Split of the targets (recorded).
        workers: Worker processes for the pairwise fits (0: this process).

    Returns:
        ``{"metrics": ..., "protocol": ...}`` as written to ``csp_metrics.json``.
    """
    from pathlib import Path

    from mmcrystal.evaluation.inputs import load_structures, worker_pool
    from mmcrystal.evaluation.protocol import library_versions
    from mmcrystal.evaluation.report import write_json, write_rows_csv

    tolerances = MatcherTolerances(ltol=ltol, stol=stol, angle_tol=angle_tol)
    executor = worker_pool(workers)
    try:
        target_records, target_structures = load_structures(targets, executor)
        gen_records, gen_structures = load_structures(generated, executor)
        groups = _group_generated(gen_records, gen_structures, [r.id for r in target_records], id_separator)
        if k is not None:
            groups = [g[:k] for g in groups]
        summary, rows = csp_metrics(groups, target_structures, tolerances, validity_gate, executor=executor)  # type: ignore[arg-type]
    finally:
        if executor is not None:
            executor.shutdown()
    for row, record in zip(rows, target_records, strict=True):
        row["target_id"] = record.id
    protocol = {
        "generated": generated,
        "targets": targets,
        "n_targets": len(target_records),
        "n_generated": len(gen_records),
        "dataset": dataset,
        "split": split,
        "matcher": tolerances.as_dict(),
        "validity_gate": validity_gate,
        "versions": library_versions(),
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    payload = {"metrics": summary, "protocol": protocol}
    write_json(Path(out) / "csp_metrics.json", payload)
    write_rows_csv(Path(out) / "csp_per_target.csv", rows)
    return payload
