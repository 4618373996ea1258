"""Stage 4, condition adherence: do conditioned samples satisfy their conditions?

Each check is optional and runs only for samples that carry that target (`ConditionTargets`):

- composition: same reduced formula (``Composition.reduced_formula``);
- chemical system: same set of elements;
- crystal system and space group: from spglib via pymatgen's ``SpacegroupAnalyzer`` at ``symprec`` (Å, recorded)
  and ``angle_tolerance`` (degrees);
- property: |prediction - target| <= tolerance, with predictions from a property model passed in. The model must
  not be the one that guided generation (nor trained on its outputs): a guidance surrogate rates its own
  adversarial samples well, so adherence measured with it is inflated (see docs/EVALUATION.md on keeping the
  evaluation oracle separate). Any object with ``predict(structures) -> (mean, std)`` works;
- XRD agreement: cosine similarity and Rwp between the pattern simulated from the sample and the target pattern
  on the same 2θ grid. The default simulator is ``mmcrystal.modalities.xrd.xrd_from_structures`` when importable,
  else pymatgen's ``XRDCalculator`` rendered with Gaussian peaks on a fixed grid (`pymatgen_pattern`).
  Rwp here is unweighted (w = 1, since simulated targets have no counting noise), after the least-squares scale
  of the sample's pattern onto the target: Rwp = sqrt(sum (y_t - s y_s)^2 / sum y_t^2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "ConditionTargets",
    "PropertyModel",
    "symmetry_info",
    "composition_match",
    "chemsys_match",
    "xrd_agreement",
    "default_pattern_fn",
    "pymatgen_pattern",
    "adherence_records",
    "load_targets",
    "target_for",
]

log = logging.getLogger(__name__)


class PropertyModel(Protocol):
    """A property predictor used only for evaluation (never the guidance model)."""

    def predict(self, structures: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) arrays of shape (B,) in the property's units."""


@dataclass
class ConditionTargets:
    """Targets of one sample; None means "not conditioned on this".

    Attributes:
        composition: Target formula (any multiple of the reduced formula matches).
        chemical_system: Elements joined by ``-`` (order free), e.g. ``Fe-O``.
        crystal_system: ``cubic``, ``hexagonal``, ``trigonal``, ``tetragonal``, ``orthorhombic``, ``monoclinic``,
            ``triclinic``.
        space_group: International space-group number (1-230).
        property: Target property value (units of the property model).
        xrd: Target pattern on the simulator's grid, shape (n_bins,).
    """

    composition: str | None = None
    chemical_system: str | None = None
    crystal_system: str | None = None
    space_group: int | None = None
    property: float | None = None
    xrd: np.ndarray | None = None


def symmetry_info(structure, symprec: float = 0.1, angle_tolerance: float = 5.0) -> tuple[int | None, str | None]:
    """(space-group number, crystal system) from spglib; (None, None) when spglib fails."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance)
        return int(sga.get_space_group_number()), str(sga.get_crystal_system())
    except Exception:  # noqa: BLE001 - spglib fails on degenerate cells; reported as unknown
        return None, None


def composition_match(structure, target: str) -> bool:
    from pymatgen.core import Composition

    return structure.composition.reduced_formula == Composition(target).reduced_formula


def chemsys_match(structure, target: str) -> bool:
    wanted = {s.strip() for s in target.replace(",", "-").split("-") if s.strip()}
    return {el.symbol for el in structure.composition.elements} == wanted


def xrd_agreement(pattern: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(cosine similarity, Rwp) of two patterns on the same grid (module docstring)."""
    y_s, y_t = np.asarray(pattern, dtype=float), np.asarray(target, dtype=float)
    if y_s.shape != y_t.shape:
        raise ValueError(f"patterns are on different grids: {y_s.shape} vs {y_t.shape}")
    norm = np.linalg.norm(y_s) * np.linalg.norm(y_t)
    cosine = float(y_s @ y_t / norm) if norm > 0 else 0.0
    scale = float(y_s @ y_t / (y_s @ y_s)) if y_s @ y_s > 0 else 0.0
    denominator = float(y_t @ y_t)
    rwp = float(np.sqrt(np.sum((y_t - scale * y_s) ** 2) / denominator)) if denominator > 0 else float("nan")
    return cosine, rwp


def pymatgen_pattern(
    structures: Sequence, two_theta: tuple[float, float] = (5.0, 90.0), n_bins: int = 4096, fwhm: float = 0.1
) -> np.ndarray:
    """Fallback simulator: pymatgen ``XRDCalculator`` (CuKa) peaks as Gaussians (FWHM in 2θ degrees) on a
    fixed grid, each pattern scaled to maximum 1. Shape (B, n_bins)."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    grid = np.linspace(two_theta[0], two_theta[1], n_bins)
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    calculator = XRDCalculator()
    out = np.zeros((len(structures), n_bins))
    for i, s in enumerate(structures):
        peaks = calculator.get_pattern(s, two_theta_range=two_theta)
        for x, h in zip(peaks.x, peaks.y, strict=True):
            out[i] += h * np.exp(-0.5 * ((grid - x) / sigma) ** 2)
        out[i] /= max(out[i].max(), 1e-12)
    return out


def default_pattern_fn() -> tuple[Callable[[Sequence], np.ndarray], str]:
    """(pattern function, description): the torch simulator when importable, else `pymatgen_pattern`."""
    try:
        from mmcrystal.modalities.xrd import XRDConfig, xrd_from_structures

        config = XRDConfig()
        return (
            lambda structures: xrd_from_structures(structures, config),
            f"mmcrystal.modalities.xrd.xrd_from_structures({config})",
        )
    except Exception as exc:  # noqa: BLE001 - the simulator is another engineer's module and may be unfinished
        log.info("torch XRD simulator unavailable (%s); using pymatgen XRDCalculator on a fixed grid", exc)
        return pymatgen_pattern, "pymatgen XRDCalculator, CuKa, 5-90 deg, 4096 bins, Gaussian FWHM 0.1 deg"


def _symmetry_columns(structure, target: ConditionTargets, symprec: float, angle_tol: float) -> dict[str, Any]:
    number, system = symmetry_info(structure, symprec, angle_tol)
    row: dict[str, Any] = {}
    if target.space_group is not None:
        row["space_group_match"] = number == int(target.space_group)
    if target.crystal_system is not None:
        row["crystal_system_match"] = system == str(target.crystal_system).lower()
    return row


def adherence_records(
    structures: Sequence,
    targets: Sequence[ConditionTargets | None],
    symprec: float = 0.1,
    angle_tolerance: float = 5.0,
    property_model: PropertyModel | None = None,
    property_tolerance: float | None = None,
    pattern_fn: Callable[[Sequence], np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Per-structure adherence columns (only those whose target is given)."""
    rows: list[dict[str, Any]] = []
    for structure, target in zip(structures, targets, strict=True):
        row: dict[str, Any] = {}
        if target is not None:
            if target.composition:
                row["composition_match"] = composition_match(structure, target.composition)
            if target.chemical_system:
                row["chemsys_match"] = chemsys_match(structure, target.chemical_system)
            row.update(_symmetry_columns(structure, target, symprec, angle_tolerance))
        rows.append(row)
    _property_columns(structures, targets, rows, property_model, property_tolerance)
    _xrd_columns(structures, targets, rows, pattern_fn)
    return rows


def _property_columns(structures, targets, rows, model: PropertyModel | None, tolerance: float | None) -> None:
    wanted = [i for i, t in enumerate(targets) if t is not None and t.property is not None]
    if not wanted or model is None:
        return
    mean, std = model.predict([structures[i] for i in wanted])
    for k, i in enumerate(wanted):
        rows[i]["property_pred"], rows[i]["property_std"] = float(mean[k]), float(std[k])
        rows[i]["property_error"] = abs(float(mean[k]) - float(targets[i].property))
        if tolerance is not None:
            rows[i]["property_within_tol"] = rows[i]["property_error"] <= tolerance


def _xrd_columns(structures, targets, rows, pattern_fn) -> None:
    wanted = [i for i, t in enumerate(targets) if t is not None and t.xrd is not None]
    if not wanted:
        return
    fn = pattern_fn or default_pattern_fn()[0]
    patterns = np.asarray(fn([structures[i] for i in wanted]))
    for k, i in enumerate(wanted):
        rows[i]["xrd_cosine"], rows[i]["xrd_rwp"] = xrd_agreement(patterns[k], targets[i].xrd)


def load_targets(conditions: str | None, xrd_targets: str | None) -> dict[Any, ConditionTargets]:
    """Targets keyed by sample id and by row (``row``/``index`` column, else file order for the XRD array).

    ``conditions``: CSV/JSON-lines table with ``id`` (or ``row``) and any of ``composition``, ``chemical_system``,
    ``crystal_system``, ``space_group``, ``property``. ``xrd_targets``: ``.npy`` of shape (n_samples, n_bins) on the
    pattern function's grid, row i for sample i.
    """
    import pandas as pd

    targets: dict[Any, ConditionTargets] = {}
    if conditions:
        frame = pd.read_json(conditions, lines=True) if conditions.endswith(".jsonl") else pd.read_csv(conditions)
        fields = ("composition", "chemical_system", "crystal_system", "space_group", "property")
        for i, rec in enumerate(frame.to_dict("records")):
            values = {k: rec.get(k) for k in fields if k in rec and pd.notna(rec.get(k))}
            if "space_group" in values:
                values["space_group"] = int(values["space_group"])
            key = ("row", int(rec["row"])) if "row" in rec else ("id", str(rec.get("id", i)))
            targets[key] = ConditionTargets(**values)
    if xrd_targets:
        patterns = np.load(xrd_targets)
        for i, pattern in enumerate(patterns):
            current = targets.setdefault(("row", i), ConditionTargets())
            current.xrd = np.asarray(pattern, dtype=float)
    return targets


def target_for(targets: dict, record) -> ConditionTargets | None:
    by_row, by_id = targets.get(("row", record.index)), targets.get(("id", record.id))
    if by_row is not None and by_id is not None:  # id-keyed conditions + row-keyed XRD target
        merged = ConditionTargets(**{k: v for k, v in vars(by_id).items()})
        merged.xrd = by_row.xrd
        return merged
    return by_row or by_id
