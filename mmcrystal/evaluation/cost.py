"""Stage 6, cost: wall time and device time per 1,000 samples and per S.U.N. structure, potential calls spent.

Wall time is measured per stage in the main process (``time.perf_counter``). Worker CPU time is summed from the
chunks (``time.process_time`` inside each worker), and "device time" is the time spent inside the potential's calls
(on a GPU the calls are synchronised before the clock stops; on CPU it is CPU time of those calls). Chunks reused
from an earlier, interrupted run contribute the times recorded when they were computed, flagged by
``chunks_reused``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CostTracker"]


@dataclass
class CostTracker:
    """Accumulates stage wall times, worker CPU times and potential-call counters.

    Attributes:
        wall: Stage name -> wall seconds in the main process.
        worker_cpu: Stage name -> CPU seconds summed over worker chunks.
        potential: Counter name -> value (``n_single_point``, ``n_relax_steps``, ``n_relaxations``,
            ``potential_seconds``), for samples and for hull references separately.
    """

    wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    worker_cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    potential: dict[str, dict[str, float]] = field(
        default_factory=lambda: {"samples": defaultdict(float), "hull_reference": defaultdict(float)}
    )

    @contextmanager
    def stage(self, name: str):
        """Time a block of the main process under ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.wall[name] += time.perf_counter() - start

    def add_worker(self, cpu: dict[str, float], potential: dict[str, float] | None = None) -> None:
        for name, seconds in cpu.items():
            self.worker_cpu[name] += seconds
        for name, value in (potential or {}).items():
            self.potential["samples"][name] += value

    def add_hull(self, potential: dict[str, float]) -> None:
        for name, value in potential.items():
            self.potential["hull_reference"][name] += value

    def summary(self, n_samples: int, n_sun: dict[str, int], device: str) -> dict[str, Any]:
        """Totals, per 1,000 samples and per S.U.N. structure (one entry per stability threshold)."""
        wall = sum(self.wall.values())
        samples = dict(self.potential["samples"])
        device_s = samples.get("potential_seconds", 0.0) + self.potential["hull_reference"].get(
            "potential_seconds", 0.0
        )
        per_k = 1000.0 / n_samples if n_samples else float("nan")
        out: dict[str, Any] = {
            "device": device,
            "wall_seconds": wall,
            "wall_seconds_by_stage": dict(self.wall),
            "worker_cpu_seconds_by_stage": dict(self.worker_cpu),
            "device_seconds": device_s,
            "wall_seconds_per_1000_samples": wall * per_k,
            "device_seconds_per_1000_samples": device_s * per_k,
            "potential_calls": {k: dict(v) for k, v in self.potential.items()},
        }
        for threshold, count in n_sun.items():
            out[f"wall_seconds_per_sun@{threshold}"] = wall / count if count else None
            out[f"device_seconds_per_sun@{threshold}"] = device_s / count if count else None
        return out
