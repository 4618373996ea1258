"""The staged screen of a design round, cheapest first, reusing the evaluation stages' functions:

    chemistry (objectives.chemistry_violation) -> structural validity (distances > min_distance, volume)
    -> SMACT charge neutrality + electronegativity -> uniqueness against every earlier candidate of the run
    -> novelty against the training structures (StructureMatcher, bucketed by reduced formula)

Every candidate gets every column it reached and one `screen_reject` reason ("" when it passed): a candidate is
never dropped without a reason. SMACT is always computed (the synthesizability monitor reads it) but only rejects
when `require_smact` is on. Uniqueness holds across rounds: the first member of each group of matching candidates
is remembered (and rebuilt from the stored rounds on resume).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from mmcrystal.design.config import ChemistryConstraints, ScreenConfig
from mmcrystal.design.objectives import chemistry_violation
from mmcrystal.evaluation.matching import ReferenceIndex, bucket_key, reduce_for_matching, structures_match
from mmcrystal.evaluation.protocol import MatcherTolerances
from mmcrystal.evaluation.validity import ValidityConfig, smact_valid, structural_validity

__all__ = ["CandidateScreen"]

log = logging.getLogger(__name__)


class CandidateScreen:
    """Screens candidates and remembers the unique ones.

    Args:
        config: `ScreenConfig`.
        chemistry: `ChemistryConstraints`.
        index: Training structures for novelty (None: novelty is not judged and every candidate counts as novel).
    """

    def __init__(
        self, config: ScreenConfig, chemistry: ChemistryConstraints, index: ReferenceIndex | None = None
    ) -> None:
        self.config, self.chemistry, self.index = config, chemistry, index
        self.tolerances = MatcherTolerances(ltol=config.ltol, stol=config.stol, angle_tol=config.angle_tol)
        self.validity = ValidityConfig(min_distance=config.min_distance)
        self.seen: dict[str, list[tuple[str, Any]]] = defaultdict(list)  # bucket -> [(id, reduced structure)]

    def _first_match(self, reduced, key: str) -> str | None:
        return next((sid for sid, s in self.seen.get(key, ()) if structures_match(s, reduced, self.tolerances)), None)

    def _reduced(self, structure):
        try:
            reduced = reduce_for_matching(structure, self.tolerances.primitive_cell)
            return reduced, bucket_key(reduced)
        except Exception as exc:  # noqa: BLE001 - a cell pymatgen cannot reduce is a named rejection
            log.debug("reduction failed: %s", exc)
            return None, ""

    def screen_one(self, sid: str, structure, require_smact: bool) -> dict[str, Any]:
        """The screen columns of one candidate (and remember it when it is the first of its kind)."""
        row: dict[str, Any] = {"formula": structure.composition.reduced_formula, "num_atoms": len(structure)}
        reason = chemistry_violation(structure, self.chemistry)
        if reason:
            return {**row, "screen_reject": f"chemistry:{reason}"}
        struct_ok, why, _ = structural_validity(structure, self.validity.min_distance, self.validity.min_volume)
        try:
            comp_ok = smact_valid(structure.composition, self.validity)
        except Exception:  # noqa: BLE001 - an element SMACT does not know: not charge balanced as far as we know
            comp_ok = False
        row.update(struct_valid=bool(struct_ok), smact_valid=bool(comp_ok))
        if not struct_ok:
            return {**row, "screen_reject": f"structure:{why}"}
        if require_smact and not comp_ok:
            return {**row, "screen_reject": "smact"}
        reduced, key = self._reduced(structure)
        if reduced is None:
            return {**row, "screen_reject": "structure:reduction_failed"}
        duplicate_of = self._first_match(reduced, key)
        row.update(unique=duplicate_of is None, duplicate_of=duplicate_of or "")
        if duplicate_of is None:
            self.seen[key].append((sid, reduced))
        elif self.config.require_unique:
            return {**row, "screen_reject": "duplicate"}
        match = self.index.find_match(reduced, key, self.tolerances) if self.index is not None else None
        row.update(novel=match is None, training_match=match or "")
        if match is not None and self.config.require_novel:
            return {**row, "screen_reject": "known"}
        return {**row, "screen_reject": ""}

    def screen(self, ids: Sequence[str], structures: Sequence, require_smact: bool | None = None) -> list[dict]:
        """Screen a round's candidates in order; returns one row per candidate with `passed`."""
        require = self.config.require_smact if require_smact is None else require_smact
        rows = []
        for sid, structure in zip(ids, structures, strict=True):
            row = self.screen_one(sid, structure, require)
            rows.append({**row, "passed": row["screen_reject"] == ""})
        return rows

    def remember(self, ids: Sequence[str], structures: Sequence) -> None:
        """Re-register earlier unique candidates (resume): their ids and structures, in run order."""
        for sid, structure in zip(ids, structures, strict=True):
            reduced, key = self._reduced(structure)
            if reduced is not None:
                self.seen[key].append((sid, reduced))
