"""Stage 3, stability: CHGNet relaxation and single-point energies, relaxation RMSD.

Energies come from CHGNet (Deng et al., Nat. Mach. Intell. 2023), whose weights ship in its wheel, so this runs
offline. CHGNet was trained on MPtrj energies with the MP2020 compatibility corrections, so its energies live on
the Materials Project (corrected GGA/GGA+U) scale. The hull these energies are compared with is built in
`mmcrystal.evaluation.hull`.

Relaxation RMSD is the direct displacement between the initial and relaxed positions of each atom (the relaxation
keeps atom order, so no StructureMatcher is needed): fractional displacements wrapped to the nearest periodic image,
converted to Å with the relaxed lattice, root-mean-square over atoms. The cell change is reported separately as a
volume change in %. Every call to the potential is counted (`ChgnetPotential.counters`) for the cost stage.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from mmcrystal.evaluation.protocol import content_hash

__all__ = ["RelaxConfig", "ChgnetPotential", "relaxation_rmsd", "structure_hash", "stability_records"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelaxConfig:
    """How structures are scored with the potential.

    Attributes:
        relax: Relax before taking the energy; False gives single-point energies of the structures as given.
        optimizer: ASE optimizer name passed to CHGNet's ``StructOptimizer`` (``FIRE``, ``BFGS``, ``LBFGS``, ...).
        fmax: Force convergence threshold in eV/Å.
        steps: Maximum optimizer steps.
        relax_cell: Relax the cell too (``FrechetCellFilter``), not only positions.
        device: Torch device for the potential (``cpu``, ``cuda``); None lets CHGNet choose.
        batch_size: Structures per batched single-point call.
    """

    relax: bool = True
    optimizer: Literal["FIRE", "BFGS", "LBFGS", "BFGSLineSearch", "MDMin"] = "FIRE"
    fmax: float = 0.1
    steps: int = 500
    relax_cell: bool = True
    device: str | None = "cpu"
    batch_size: int = 16

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scoring_dict(self) -> dict[str, Any]:
        """Settings that change an energy (not the device or batch size)."""
        if not self.relax:
            return {"relax": False}
        return {k: v for k, v in self.as_dict().items() if k not in ("device", "batch_size")}


@dataclass
class ChgnetPotential:
    """CHGNet with call counters. Loaded lazily, once per process.

    Attributes:
        config: Scoring settings.
        n_single_point: Structures evaluated in single-point calls.
        n_relax_steps: Energy+force evaluations spent in relaxations (trajectory lengths).
        n_relaxations: Relaxations run.
        seconds: Time spent inside the potential (s); device time when the device is a GPU.
    """

    config: RelaxConfig = field(default_factory=RelaxConfig)
    n_single_point: int = 0
    n_relax_steps: int = 0
    n_relaxations: int = 0
    seconds: float = 0.0

    @property
    def model(self):
        return _load_chgnet()

    def info(self) -> dict[str, Any]:
        """Model name, package version and model version string, device."""
        import chgnet

        return {
            "name": "CHGNet",
            "package_version": chgnet.__version__,
            "model_version": str(self.model.version),
            "device": self.config.device or "auto",
        }

    def counters(self) -> dict[str, float]:
        return {
            "n_single_point": self.n_single_point,
            "n_relax_steps": self.n_relax_steps,
            "n_relaxations": self.n_relaxations,
            "potential_seconds": self.seconds,
        }

    def single_point(self, structures: Sequence) -> np.ndarray:
        """Energies in eV/atom, shape (B,)."""
        if not structures:
            return np.zeros(0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CHGNet warns about a tensor-to-scalar conversion on every call
            preds = self.model.predict_structure(list(structures), task="e", batch_size=self.config.batch_size)
        preds = preds if isinstance(preds, list) else [preds]
        self._synchronize()
        self.seconds += time.perf_counter() - start
        self.n_single_point += len(structures)
        return np.array([float(p["e"]) for p in preds])

    def relax(self, structure) -> dict[str, Any]:
        """Relax one structure: ``{"structure", "energy_per_atom" (eV/atom), "steps", "converged"}``.

        ``steps`` counts energy+force evaluations (trajectory length); ``converged`` means the largest atomic force
        at the last step is <= fmax (ASE's optimizer also weighs the cell stress, so it can stop just above it).
        """
        cfg = self.config
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = _optimizer(cfg.optimizer, cfg.device).relax(
                structure, fmax=cfg.fmax, steps=cfg.steps, relax_cell=cfg.relax_cell, verbose=False
            )
        self._synchronize()
        self.seconds += time.perf_counter() - start
        trajectory = result["trajectory"]
        steps = len(trajectory.energies)
        self.n_relax_steps += steps
        self.n_relaxations += 1
        final = result["final_structure"]
        forces = np.asarray(trajectory.forces[-1]) if len(trajectory.forces) else np.zeros((1, 3))
        return {
            "structure": final,
            "energy_per_atom": float(trajectory.energies[-1]) / len(final),
            "steps": steps,
            "converged": bool(np.linalg.norm(forces, axis=1).max() <= cfg.fmax),
        }

    def score(self, structures: Sequence) -> list[dict[str, Any]]:
        """Energies under ``config``: relaxed one by one, or single-point in batches. A failure is an ``error``."""
        if not self.config.relax:
            try:
                energies = self.single_point(structures)
                return [
                    {"structure": s, "energy_per_atom": float(e), "steps": 0}
                    for s, e in zip(structures, energies, strict=True)
                ]
            except Exception:  # noqa: BLE001 - one bad structure must not lose the batch: retry one by one
                pass
        out = []
        for s in structures:
            try:
                if self.config.relax:
                    out.append(self.relax(s))
                else:
                    out.append({"structure": s, "energy_per_atom": float(self.single_point([s])[0]), "steps": 0})
            except Exception as exc:  # noqa: BLE001 - isolated atoms, graph failures: recorded, not fatal
                out.append({"error": f"{type(exc).__name__}: {str(exc)[:160]}"})
        return out

    def _synchronize(self) -> None:
        if (self.config.device or "").startswith("cuda"):
            import torch

            torch.cuda.synchronize()


@functools.lru_cache(maxsize=1)
def _load_chgnet():
    from chgnet.model import CHGNet

    return CHGNet.load(verbose=False)


@functools.lru_cache(maxsize=4)
def _optimizer(name: str, device: str | None):
    from chgnet.model import StructOptimizer

    return StructOptimizer(model=_load_chgnet(), optimizer_class=name, use_device=device, on_isolated_atoms="ignore")


def relaxation_rmsd(initial, relaxed) -> tuple[float, float]:
    """(RMS displacement in Å, volume change in %) between two structures with the same atom order."""
    delta = np.asarray(relaxed.frac_coords) - np.asarray(initial.frac_coords)
    delta -= np.round(delta)  # nearest periodic image
    cart = delta @ np.asarray(relaxed.lattice.matrix)  # (N, 3) Å
    rmsd = float(np.sqrt(np.mean(np.sum(cart**2, axis=1))))
    return rmsd, float(100.0 * (relaxed.volume / initial.volume - 1.0))


def structure_hash(structure) -> str:
    """Content hash of a structure (lattice, species, coordinates rounded to 1e-6)."""
    payload = [
        np.round(np.asarray(structure.lattice.matrix), 6).tolist(),
        [site.specie.symbol for site in structure],
        np.round(np.asarray(structure.frac_coords), 6).tolist(),
    ]
    return content_hash(payload, length=32)


def _initial_energies(structures: Sequence, potential: ChgnetPotential) -> list[float | str]:
    """Batched single points; on a batch failure, one by one so that one bad structure is the only loss."""
    try:
        return [float(e) for e in potential.single_point(structures)]
    except Exception:  # noqa: BLE001 - retried one by one below
        out: list[float | str] = []
        for s in structures:
            try:
                out.append(float(potential.single_point([s])[0]))
            except Exception as exc:  # noqa: BLE001 - isolated atoms, graph failures: a named failure
                out.append(f"{type(exc).__name__}: {str(exc)[:160]}")
        return out


def stability_records(structures: Sequence, potential: ChgnetPotential) -> list[tuple[dict[str, Any], Any]]:
    """Per-structure stability columns and the scored (relaxed) structure (None on failure).

    Columns: ``e_initial`` (single-point eV/atom of the structure as given, batched), ``e_final`` (eV/atom after
    relaxation; equal to ``e_initial`` when not relaxing), ``relax_steps``, ``relax_converged``, ``relax_rmsd`` (Å),
    ``relax_volume_change`` (%), ``stability_error`` (empty when all went well).
    """
    out = []
    for structure, e0 in zip(structures, _initial_energies(structures, potential), strict=True):
        if isinstance(e0, str):
            out.append(({"stability_error": e0}, None))
            continue
        row: dict[str, Any] = {"stability_error": "", "e_initial": e0}
        if not potential.config.relax:
            out.append(({**row, "e_final": e0, "relax_steps": 0}, structure))
            continue
        try:
            result = potential.relax(structure)
        except Exception as exc:  # noqa: BLE001 - a failed relaxation is a counted, named failure
            out.append(({**row, "stability_error": f"{type(exc).__name__}: {str(exc)[:160]}"}, None))
            continue
        rmsd, dvol = relaxation_rmsd(structure, result["structure"])
        row.update(
            e_final=result["energy_per_atom"],
            relax_steps=result["steps"],
            relax_converged=result["converged"],
            relax_rmsd=rmsd,
            relax_volume_change=dvol,
        )
        out.append((row, result["structure"]))
    return out
