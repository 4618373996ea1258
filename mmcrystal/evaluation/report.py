"""Writing an evaluation: ``metrics.json`` (aggregates + protocol), ``per_structure.csv`` and ``report.md`` with
plots (E_hull histogram, density and atom-count distributions against the reference, element frequencies) when
matplotlib is installed; without it the plots are skipped with a logged note.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_json", "write_rows_csv", "write_markdown", "make_plots", "plot_xrd_examples"]

log = logging.getLogger(__name__)
_FIRST_COLUMNS = ["row", "id", "location", "status", "skip_reason", "formula", "n_atoms", "n_elements", "density"]


def _clean(value: Any) -> Any:
    """JSON-safe values: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(_clean(payload), indent=2, sort_keys=False) + "\n")


def write_rows_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """One row per sample; columns are the union of all rows' keys (fixed leading columns first)."""
    keys = list(dict.fromkeys([k for k in _FIRST_COLUMNS if any(k in r for r in rows)] + [k for r in rows for k in r]))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _clean(v) for k, v in row.items()})


def make_plots(out_dir: str | Path, rows: Sequence[dict], reference: dict | None) -> list[str]:
    """PNG plots into ``out_dir``; returns their file names (empty when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: report plots skipped")
        return []
    out_dir, files = Path(out_dir), []
    ok = [r for r in rows if r["status"] == "ok"]

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        files.append(name)

    e_hull = [r["e_above_hull"] for r in ok if "e_above_hull" in r]
    if e_hull:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(np.clip(e_hull, -0.5, 1.0), bins=60, color="tab:blue")
        for t in (0.0, 0.1):
            ax.axvline(t, color="k", ls="--", lw=0.8)
        ax.set(xlabel="E above hull (eV/atom, clipped to [-0.5, 1])", ylabel="samples")
        save(fig, "e_hull_hist.png")
    for key, label, name in (
        ("density", "density (g/cm$^3$)", "density.png"),
        ("n_atoms", "atoms per cell", "n_atoms.png"),
    ):
        values = [r[key] for r in ok if key in r]
        if not values:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ref = reference.get(key) if reference else None
        bins = np.histogram_bin_edges(np.concatenate([values, ref if ref is not None and len(ref) else []]), bins=40)
        ax.hist(values, bins=bins, density=True, alpha=0.6, label="samples")
        if ref is not None and len(ref):
            ax.hist(ref, bins=bins, density=True, alpha=0.5, label="reference")
        ax.set(xlabel=label, ylabel="density of samples")
        ax.legend()
        save(fig, name)
    counts = Counter(el for r in ok for el in str(r.get("chemsys", "")).split("-") if el)
    if counts:
        top = counts.most_common(40)
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.bar([k for k, _ in top], [v / len(ok) for _, v in top])
        ax.set(ylabel="fraction of samples containing", title="element frequencies (top 40)")
        ax.tick_params(axis="x", labelsize=7, rotation=90)
        save(fig, "elements.png")
    return files


def plot_xrd_examples(out_dir: str | Path, examples: Sequence[tuple[str, Any]], name: str = "xrd_examples.png"):
    """Simulated powder XRD (Cu Kα, 5-90° 2θ) of a few valid samples, one panel each; returns [name] or []."""
    if not examples:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    from mmcrystal.modalities.xrd import XRDConfig, two_theta_grid, xrd_from_structures

    config = XRDConfig(n_bins=2048, fwhm=0.15)
    patterns = xrd_from_structures([s for _, s in examples], config)
    grid = two_theta_grid(config).numpy()
    fig, axes = plt.subplots(len(examples), 1, figsize=(7, 1.6 * len(examples)), sharex=True, squeeze=False)
    for ax, (label, structure), pattern in zip(axes[:, 0], examples, patterns, strict=True):
        ax.plot(grid, pattern, lw=0.8)
        ax.set_ylabel("I / I_max", fontsize=7)
        ax.set_title(f"{label}: {structure.composition.reduced_formula}", fontsize=8)
    axes[-1, 0].set_xlabel("2θ (degrees, Cu Kα)")
    fig.tight_layout()
    fig.savefig(Path(out_dir) / name, dpi=110)
    plt.close(fig)
    return [name]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def write_markdown(path: str | Path, metrics: dict[str, Any], protocol: dict[str, Any], plots: Sequence[str]) -> None:
    """A human-readable report: one table per stage, the protocol record, the plots."""
    lines = ["# Evaluation of generated crystals", ""]
    for stage, values in metrics.items():
        if not isinstance(values, dict):
            continue
        lines += [f"## {stage}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in values.items()]
        lines.append("")
    lines += ["## Protocol", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in protocol.items()]
    lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    Path(path).write_text("\n".join(lines))
