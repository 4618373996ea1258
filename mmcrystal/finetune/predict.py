"""`mmcrystal predict`: properties (mean and std) of CIFs or a prepared split with fine-tuned model(s)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

__all__ = ["predict", "model_paths"]

log = logging.getLogger(__name__)


def model_paths(model: str) -> list[Path]:
    """``dir``, ``dir1,dir2`` (an ensemble) or a folder whose sub-folders are model folders (an ensemble)."""
    paths = [Path(p.strip()) for p in str(model).split(",") if p.strip()]
    if len(paths) == 1 and not (paths[0] / "config.json").exists() and paths[0].is_dir():
        members = sorted(p for p in paths[0].iterdir() if (p / "config.json").exists())
        if members:
            return members
    for path in paths:
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a fine-tuned model folder (no config.json)")
    return paths


def _load_inputs(source: Path, split: str, fields: tuple[str, ...]) -> tuple[list[dict], list[tuple[str, str]]]:
    from mmcrystal.finetune.data import load_prepared_samples, read_structure_files

    if source.is_dir() and (source / "manifest.json").exists():
        samples, _ = load_prepared_samples(str(source), [split], ("z", "frac", "lattice", *fields))
        return samples, []
    return read_structure_files(source)


def predict(
    model: str | None = None,
    input: str | None = None,
    out: str = "predictions.csv",
    split: str = "test",
    batch_size: int = 64,
    mc_samples: int = 0,
    device: str = "cpu",
) -> str:
    """Predict every task of fine-tuned model(s) for structures and write a CSV: ``id``, then per task
    ``<task>_mean`` and ``<task>_std`` (and ``<task>_true`` where the input carries that property).

    Args:
        model: A folder written by ``PropertyFinetuning.save_pretrained`` (``<run>/pretrained``); several folders
            joined by commas, or a folder of such folders, form an ensemble (std = spread of the members).
        input: A CIF (or any structure file pymatgen reads), a folder of ``*.cif``, a CSV with a ``cif`` column,
            or a prepared folder (``mmcrystal prepare`` output; its XRD/captions feed models that use them).
        out: Output CSV path.
        split: With a prepared folder: which split.
        batch_size: Crystals per forward pass.
        mc_samples: MC-dropout draws per model (0: deterministic; std then comes from the ensemble only, and is 0
            for a single model).
        device: ``cpu`` or ``cuda``.

    Returns:
        The CSV path. Records that cannot be read are skipped, logged with their reason and counted.
    """
    from mmcrystal.finetune.predictor import PropertyPredictor

    if model is None or input is None:
        raise ValueError("predict needs both --model DIR and --input FILE_OR_FOLDER")
    predictor = PropertyPredictor.from_pretrained(model_paths(model), mc_samples=mc_samples, device=device)
    fields = ("xrd",) if any("xrd" in m.config.inputs for m in predictor.models) else ()
    samples, skipped = _load_inputs(Path(input), split, fields)
    if not samples:
        raise ValueError(f"{input}: no readable structure ({len(skipped)} skipped)")
    mean, std = predictor.predict_samples(samples, batch_size=batch_size)
    targets = predictor.targets
    truth = [_truth(target, samples) for target in targets]
    header = ["id"]
    for target, known in zip(targets, truth, strict=True):
        header += [f"{target.key}_mean", f"{target.key}_std"] + ([f"{target.key}_true"] if known is not None else [])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, sample in enumerate(samples):
            row: list = [sample["meta"]["id"]]
            for t, known in enumerate(truth):
                row += [f"{mean[i, t]:.6g}", f"{std[i, t]:.6g}"]
                if known is not None:
                    row.append("" if np.isnan(known[i]) else f"{known[i]:.6g}")
            writer.writerow(row)
    report = log.warning if skipped else log.info
    report("predict: %d structures -> %s (%d skipped: unreadable)", len(samples), out, len(skipped))
    return out


def _truth(target, samples: list[dict]) -> np.ndarray | None:
    """The task's known values (labels for a thresholded binary task), NaN where missing; None if none known."""
    values = np.array([s["meta"].get("properties", {}).get(target.name, np.nan) for s in samples], dtype=np.float64)
    if not np.isfinite(values).any():
        return None
    if target.kind == "binary" and target.threshold is not None:
        return np.where(np.isfinite(values), (values > target.threshold).astype(np.float64), np.nan)
    return values
