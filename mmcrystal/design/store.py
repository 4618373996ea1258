"""The resumable run folder of a design run.

    <out>/config.json                       the config snapshot (config_to_dict); a resume must match it
    <out>/rounds/round_0003.jsonl           every candidate of round 3: condition, screen, surrogate, oracle,
                                            decisions (the table; typed, one JSON object per line)
    <out>/rounds/round_0003.csv             the same table for spreadsheets
    <out>/rounds/round_0003.structures.jsonl  {"id", "structure"} pymatgen dicts of every candidate
    <out>/state.json                        `LoopState` after the last finished round (written last, atomically)
    <out>/report.md, <out>/plots/*.png      written by `mmcrystal.design.report`

A round counts as finished when state.json says so; a round interrupted half-way is recomputed from its seed, so
the resumed run equals an uninterrupted one. The budget may be raised on resume, and the device and cache folder
may change; everything else must equal the snapshot.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mmcrystal.config import config_to_dict
from mmcrystal.design.config import DesignConfig

__all__ = ["LoopState", "RunStore"]

RESUMABLE_FIELDS = ("budget", "out", "device", "cache_dir")  # may differ between the snapshot and a resumed run


@dataclass
class LoopState:
    """Everything the loop carries from one round to the next (the proposer's optimiser state included).

    Attributes:
        round: The next round to run (0-based).
        guidance: Current guidance scale (monitors may lower it).
        std_inflation: Factor on the surrogate std in the acquisition (monitors may raise it).
        ood_filter: Whether the shortlist skips out-of-distribution candidates.
        require_smact: Whether the screen rejects SMACT failures.
        oracle_calls: Oracle calls spent.
        samples: Crystals generated.
        potential_evaluations: CHGNet energy evaluations spent.
        elapsed_s: Loop seconds, summed over sessions.
        spread_baseline: First round's fingerprint spread (diversity monitor).
        stopped: Why the loop stopped ("" while it may continue).
        proposer: The proposer's `state_dict` (CMA-ES mean, step, covariance, paths, RNG).
        history: Per-round summaries (objective, S.U.N. and hit counts, monitor readings, steering).
    """

    round: int = 0
    guidance: float = 2.0
    std_inflation: float = 1.0
    ood_filter: bool = False
    require_smact: bool = True
    oracle_calls: int = 0
    samples: int = 0
    potential_evaluations: float = 0.0
    elapsed_s: float = 0.0
    spread_baseline: float | None = None
    stopped: str = ""
    proposer: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _restore_nan(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (math.nan if v is None else v) for k, v in row.items()}


class RunStore:
    """Reads and writes one run folder (module docstring).

    Args:
        out: The folder.
        config: The run's config; compared with the snapshot when the folder already holds one.
    """

    def __init__(self, out: str | Path, config: DesignConfig) -> None:
        self.out = Path(out)
        (self.out / "rounds").mkdir(parents=True, exist_ok=True)
        snapshot = _clean(config_to_dict(config))
        path = self.out / "config.json"
        if path.exists():
            old = json.loads(path.read_text())
            changed = sorted(
                k for k in set(old["init_args"]) | set(snapshot["init_args"])
                if k not in RESUMABLE_FIELDS and old["init_args"].get(k) != snapshot["init_args"].get(k)
            )  # fmt: skip
            if changed:
                raise ValueError(f"{self.out} holds a run with another config ({', '.join(changed)} differ); "
                                 "resume with the same config (only budget, device, cache_dir may change) or use a new folder")  # fmt: skip
        _atomic_write(path, json.dumps(snapshot, indent=1))

    @classmethod
    def reader(cls, out: str | Path) -> RunStore:
        """Read access to an existing run folder (no config check, nothing written)."""
        store = cls.__new__(cls)
        store.out = Path(out)
        return store

    def table_path(self, k: int, suffix: str = ".jsonl") -> Path:
        return self.out / "rounds" / f"round_{k:04d}{suffix}"

    # ---------------------------------------------------------------------------------------------------- state
    def load_state(self) -> LoopState | None:
        path = self.out / "state.json"
        return LoopState.from_dict(json.loads(path.read_text())) if path.exists() else None

    def save_state(self, state: LoopState) -> None:
        _atomic_write(self.out / "state.json", json.dumps(_clean(asdict(state)), indent=1))

    # --------------------------------------------------------------------------------------------------- rounds
    def write_round(self, k: int, rows: list[dict[str, Any]], structures: list) -> None:
        """Structures, then the JSONL table, then its CSV copy (state.json, written after, marks completion)."""
        lines = [json.dumps({"id": r["id"], "structure": s.as_dict()}) for r, s in zip(rows, structures, strict=True)]
        _atomic_write(self.table_path(k, ".structures.jsonl"), "\n".join(lines) + "\n")
        clean = [_clean(r) for r in rows]
        _atomic_write(self.table_path(k), "".join(json.dumps(r) + "\n" for r in clean))
        columns = list(dict.fromkeys(key for r in clean for key in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{c: ("" if r.get(c) is None else r.get(c)) for c in columns} for r in clean])
        _atomic_write(self.table_path(k, ".csv"), buffer.getvalue())

    def load_rows(self, k: int) -> list[dict[str, Any]]:
        return [_restore_nan(json.loads(line)) for line in self.table_path(k).read_text().splitlines() if line]

    def load_structures(self, k: int) -> dict[str, Any]:
        from pymatgen.core import Structure

        text = self.table_path(k, ".structures.jsonl").read_text()
        items = [json.loads(line) for line in text.splitlines() if line]
        return {item["id"]: Structure.from_dict(item["structure"]) for item in items}

    def all_rows(self, rounds: int) -> list[dict[str, Any]]:
        """Rows of rounds 0 .. rounds-1."""
        return [row for k in range(rounds) for row in self.load_rows(k)]
