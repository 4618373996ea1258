"""The oracle: the independent judge of shortlisted candidates, and the budgeted resource of a design run.

One oracle call scores one candidate for
  (a) stability: CHGNet (weights in its wheel, offline) relaxes the candidate (or takes a single point) and E_hull
      is its energy above a self-consistent hull of the training structures scored with the same potential and
      settings (`mmcrystal.evaluation.hull.build_self_consistent_hull`, energies cached on disk, so a reference is
      scored once across rounds and runs);
  (b) properties: a held-out `PropertyModel`, trained separately from the surrogate, predicts every objective's
      property on the relaxed structure (the generated one when relaxation failed or was off).
Potential evaluations (single points + relaxation steps, hull references included) are counted for the budget.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from mmcrystal.design.surrogates import PropertyModel

__all__ = ["Oracle", "ChgnetHullStability", "DesignOracle"]

log = logging.getLogger(__name__)


class Oracle(Protocol):
    """What the loop needs from an oracle. It may also have `judgeable(structure) -> str`: why it cannot judge a
    structure ("" when it can); the loop then never spends a call on those."""

    def evaluate(self, structures: Sequence) -> list[dict[str, Any]]:
        """One row per structure: `e_hull` (eV/atom, NaN when unknown), `oracle_status` ("ok" or why not), and
        one value per property name."""
        ...

    def counters(self) -> dict[str, float]:
        """`potential_evaluations` spent so far (0 for oracles without a potential)."""
        ...


class ChgnetHullStability:
    """E_hull of candidates from CHGNet energies against a self-consistent hull of reference structures.

    Args:
        index: `ReferenceIndex` of the hull's reference structures.
        relax: `mmcrystal.evaluation.stability.RelaxConfig`.
        cache_dir: Where reference energies are cached.
        elemental_prototypes: Add ASE's elemental crystals to the hull.
        max_elements: Candidates with more distinct elements are not judged ("no_hull: <n> elements"; the
            phase diagram of such a system is a qhull problem in n - 1 dimensions that can run for hours).
    """

    def __init__(self, index, relax, cache_dir, elemental_prototypes: bool = True, max_elements: int = 6) -> None:
        from mmcrystal.evaluation.stability import ChgnetPotential

        self.index, self.relax, self.cache_dir = index, relax, cache_dir
        self.elemental_prototypes, self.max_elements = elemental_prototypes, max_elements
        self.potential = ChgnetPotential(relax)
        self.hull_evaluations = 0.0

    @functools.cached_property
    def endpoint_elements(self) -> frozenset[str]:
        """Elements with an elemental entry for the hull: elemental reference structures, plus ASE prototypes."""
        from pymatgen.core import Composition, Element

        from mmcrystal.evaluation.hull import elemental_prototypes

        elements = set()
        for key in self.index.buckets:
            composition = Composition(key.split("|")[0])
            if len(composition.elements) == 1:
                elements.add(composition.elements[0].symbol)
        if self.elemental_prototypes:
            symbols = [Element.from_Z(z).symbol for z in range(1, 95)]
            elements |= {ref_id.split(":")[1] for ref_id, _ in elemental_prototypes(symbols)}
        return frozenset(elements)

    def judgeable(self, structure) -> str:
        """Why E_hull cannot be had for a structure ("" when it can): too many elements, or an element without
        an elemental end point in the hull."""
        elements = {el.symbol for el in structure.composition.elements}
        if len(elements) > self.max_elements:
            return f"{len(elements)} elements"
        missing = sorted(elements - self.endpoint_elements)
        return "no elemental end point for " + "-".join(missing) if missing else ""

    def potential_evaluations(self) -> float:
        calls = self.potential.counters()
        return calls["n_single_point"] + calls["n_relax_steps"] + self.hull_evaluations

    def evaluate(self, structures: Sequence) -> list[tuple[dict[str, Any], Any]]:
        """(row with e_final, e_hull, hull_status, relax_steps, stability_error; scored structure or None)."""
        from mmcrystal.evaluation.hull import build_self_consistent_hull
        from mmcrystal.evaluation.stability import stability_records

        sizes = [len(s.composition.elements) for s in structures]
        judged = [s for s, n in zip(structures, sizes, strict=True) if n <= self.max_elements]
        scored = iter(stability_records(judged, self.potential))  # no potential calls for unjudged candidates
        systems = {frozenset(el.symbol for el in s.composition.elements) for s in judged}
        hull, calls = build_self_consistent_hull(
            self.index, systems, self.relax, self.cache_dir, self.elemental_prototypes
        )
        self.hull_evaluations += calls.get("n_single_point", 0) + calls.get("n_relax_steps", 0)
        out = []
        for structure, size in zip(structures, sizes, strict=True):
            if size > self.max_elements:
                out.append(({"e_hull": math.nan, "hull_status": f"no_hull: {size} elements"}, None))
                continue
            row, final = next(scored)
            e_hull, status = math.nan, row.get("stability_error") or "no_energy"
            if "e_final" in row and not row.get("stability_error"):
                value, status = hull.e_above_hull(structure.composition, row["e_final"])
                e_hull = math.nan if value is None else value
            out.append(({**row, "e_hull": e_hull, "hull_status": status}, final))
        return out


class DesignOracle:
    """Stability (optional) + a held-out property model, with a call counter.

    Args:
        property_model: The held-out `PropertyModel`.
        stability: A `ChgnetHullStability`, or None to judge properties only (every candidate counts as stable,
            E_hull reported as 0).
    """

    def __init__(self, property_model: PropertyModel, stability: ChgnetHullStability | None = None) -> None:
        self.property_model, self.stability = property_model, stability
        self.calls = 0

    def judgeable(self, structure) -> str:
        return self.stability.judgeable(structure) if self.stability is not None else ""

    def counters(self) -> dict[str, float]:
        evaluations = self.stability.potential_evaluations() if self.stability is not None else 0.0
        return {"oracle_calls": self.calls, "potential_evaluations": evaluations}

    def evaluate(self, structures: Sequence) -> list[dict[str, Any]]:
        if not structures:
            return []
        self.calls += len(structures)
        if self.stability is None:
            rows: list[dict[str, Any]] = [{"e_hull": 0.0, "hull_status": "not_judged"} for _ in structures]
            scored = list(structures)
        else:
            pairs = self.stability.evaluate(structures)
            rows = [row for row, _ in pairs]
            scored = [final if final is not None else s for (_, final), s in zip(pairs, structures, strict=True)]
        mean, std = self.property_model.predict(scored)
        names = list(self.property_model.property_names)
        for i, row in enumerate(rows):
            row.update({name: float(mean[i, t]) for t, name in enumerate(names)})
            row.update({f"{name}_std": float(std[i, t]) for t, name in enumerate(names)})
            ok = row.get("hull_status") in ("ok", "not_judged") and np.isfinite(mean[i]).all()
            row["oracle_status"] = "ok" if ok else str(row.get("hull_status") or "no_property")
        return rows
