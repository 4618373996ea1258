"""The report of a design run: `report.md` with per-round tables, monitor events and the Pareto front, and PNG
plots in `plots/`: objective and S.U.N. counts per round, the Pareto front of oracle-scored candidates, monitor
traces. Reads only the run folder (`state.json`, `rounds/`), so it can be rewritten for an interrupted run.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmcrystal.design.config import DesignConfig
from mmcrystal.design.objectives import objective_violation, pareto_front

__all__ = ["write_report", "run_totals", "pareto_rows"]

log = logging.getLogger(__name__)

MONITOR_TRACES = {  # monitor -> (value plotted, config threshold attribute, fires when value is "above"/"below")
    "exploitation": ("z", "exploitation_max_z", "above"),
    "diversity": ("uniqueness", "min_uniqueness", "below"),
    "shift": ("ood_fraction", "max_shift_fraction", "above"),
    "synthesizability": ("stable_not_smact", "max_stable_not_smact", "above"),
}


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def run_totals(history: Sequence[dict]) -> dict[str, float]:
    """Totals over rounds and hits per 100 oracle calls."""
    totals = {key: float(sum(h.get(key, 0) for h in history)) for key in
              ("samples", "passed", "oracle_calls", "stable", "in_target", "sun", "hits")}  # fmt: skip
    calls = totals["oracle_calls"]
    totals["hits_per_100_oracle_calls"] = 100 * totals["hits"] / calls if calls else math.nan
    totals["sun_per_100_oracle_calls"] = 100 * totals["sun"] / calls if calls else math.nan
    return totals


def pareto_rows(rows: Sequence[dict], cfg: DesignConfig) -> list[dict]:
    """Oracle-scored candidates on the front of (violation of each objective, E_hull), all minimised."""
    scored = [r for r in rows if r.get("selected") and r.get("oracle_status") == "ok"]
    if not scored:
        return []
    points = [[objective_violation({o.name: _num(r.get(o.name))}, [o]) for o in cfg.objectives]
              + [_num(r.get("e_hull"))] for r in scored]  # fmt: skip
    front = pareto_front(np.array(points))
    return [r for r, keep in zip(scored, front, strict=True) if keep]


def _bounds(objective, values: np.ndarray) -> tuple[float, float]:
    """The window, open ends closed at the data's range (for drawing)."""
    low = objective.low if objective.low is not None else float(np.nanmin(values))
    high = objective.high if objective.high is not None else float(np.nanmax(values))
    return low, high


def _plot_two_objectives(plt, folder: Path, scored: Sequence[dict], on_front, e_hull, cfg: DesignConfig) -> str:
    """Oracle values of the first two objectives, coloured by E_hull, windows shaded, the front ringed."""
    first, second = cfg.objectives[:2]
    x = np.array([_num(r.get(first.name)) for r in scored])
    y = np.array([_num(r.get(second.name)) for r in scored])
    fig, ax = plt.subplots(figsize=(5.4, 4))
    points = ax.scatter(x, y, c=e_hull, cmap="viridis", s=16)
    ax.scatter(x[on_front], y[on_front], s=60, facecolors="none", edgecolors="C3", label="Pareto front")
    (low_x, high_x), (low_y, high_y) = _bounds(first, x), _bounds(second, y)
    ax.add_patch(plt.Rectangle((low_x, low_y), high_x - low_x, high_y - low_y, alpha=0.12, color="C2", label="target"))
    fig.colorbar(points, ax=ax, label="E_hull (eV/atom)")
    ax.set(xlabel=f"{first.name} (oracle)", ylabel=f"{second.name} (oracle)", title="objectives")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "pareto_objectives.png", dpi=110)
    plt.close(fig)
    return "pareto_objectives.png"


def _plots(out: Path, history: Sequence[dict], rows: Sequence[dict], cfg: DesignConfig) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: design plots skipped")
        return []
    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    rounds = [h["round"] for h in history]
    names = []

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("sun", "S.U.N."), ("in_target", "in target"), ("hits", "hits (S.U.N. + in target)")):
        ax1.plot(rounds, [h.get(key, 0) for h in history], marker="o", label=label)
    ax1.set(xlabel="round", ylabel="oracle-scored candidates", title="per round")
    ax1.legend(fontsize=8)
    ax2.plot(rounds, [_num(h.get("mean_acquisition")) for h in history], marker="o", label="mean acquisition")
    ax2.plot(rounds, [_num(h.get("best_violation")) for h in history], marker="s", label="best violation")
    ax2.set(xlabel="round", title="objective")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "objective.png", dpi=110)
    plt.close(fig)
    names.append("objective.png")

    scored = [r for r in rows if r.get("selected") and r.get("oracle_status") == "ok"]
    if scored:
        front_ids = {r["id"] for r in pareto_rows(rows, cfg)}
        x = np.array([objective_violation({o.name: _num(r.get(o.name)) for o in cfg.objectives}, cfg.objectives)
                      for r in scored])  # fmt: skip
        y = np.array([_num(r.get("e_hull")) for r in scored])
        on = np.array([r["id"] in front_ids for r in scored])
        fig, ax = plt.subplots(figsize=(5, 3.8))
        ax.scatter(x[~on], y[~on], s=12, alpha=0.5, label="oracle-scored")
        ax.scatter(x[on], y[on], s=30, c="C3", label="Pareto front")
        ax.axhline(cfg.oracle.e_hull_max, color="grey", ls="--", lw=0.8)
        ax.set(xlabel="objective violation (sum over windows)", ylabel="E_hull (eV/atom)", title="Pareto front")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "pareto.png", dpi=110)
        plt.close(fig)
        names.append("pareto.png")
        if len(cfg.objectives) >= 2:
            names.append(_plot_two_objectives(plt, folder, scored, on, y, cfg))

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, (monitor, (key, attr, _)) in zip(axes, MONITOR_TRACES.items(), strict=True):
        readings = [next((m for m in h.get("monitors", []) if m["name"] == monitor), {}) for h in history]
        values = [_num(m.get("values", {}).get(key)) for m in readings]
        ax.plot(rounds, values, marker="o")
        fired = [(r, v) for r, v, m in zip(rounds, values, readings, strict=True) if m.get("fired")]
        if fired:
            ax.scatter([r for r, _ in fired], [v for _, v in fired], c="C3", zorder=3, label="fired")
            ax.legend(fontsize=8)
        ax.axhline(getattr(cfg.monitors, attr), color="grey", ls="--", lw=0.8)
        ax.set(xlabel="round", title=f"{monitor}: {key}")
    fig.tight_layout()
    fig.savefig(folder / "monitors.png", dpi=110)
    plt.close(fig)
    names.append("monitors.png")
    return names


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.3g}"
    return "n/a" if value is None else str(value)


def _center(center: dict | None) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in center.items()) if center else "-"


def write_report(out: str | Path, cfg: DesignConfig) -> Path:
    """Write `report.md` and `plots/*.png` of the run in `out`; returns the report path."""
    from mmcrystal.design.store import RunStore

    out = Path(out)
    state = json.loads((out / "state.json").read_text())
    history = state.get("history", [])
    store = RunStore.reader(out)
    rows = [r for k in range(state.get("round", 0)) for r in store.load_rows(k)]
    plots = _plots(out, history, rows, cfg)
    totals = run_totals(history)
    windows = ", ".join(f"{o.name} in [{_fmt(o.low)}, {_fmt(o.high)}]" for o in cfg.objectives)
    lines = [
        f"# Design run `{out}`",
        "",
        f"Objectives: {windows}; stable: E_hull <= {cfg.oracle.e_hull_max} eV/atom. Strategy: {cfg.strategy.kind}, "
        f"selection: {cfg.strategy.selection}, active learning: {cfg.strategy.active_learning}.",
        f"Stopped: {state.get('stopped') or 'not yet'} after {state.get('round', 0)} rounds, "
        f"{_fmt(state.get('elapsed_s'))} s, {_fmt(state.get('potential_evaluations'))} potential evaluations.",
        "",
        "| samples | passed screen | oracle calls | stable | in target | S.U.N. | hits | hits / 100 oracle calls |",
        "|---|---|---|---|---|---|---|---|",
        "| "
        + " | ".join(
            _fmt(totals[k])
            for k in (
                "samples",
                "passed",
                "oracle_calls",
                "stable",
                "in_target",
                "sun",
                "hits",
                "hits_per_100_oracle_calls",
            )
        )
        + " |",  # fmt: skip
        "",
        "## Rounds",
        "",
        "| round | samples | passed | oracle | S.U.N. | hits | mean acquisition | best violation | condition centre "
        "| guidance | monitors fired | steering |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for h in history:
        fired = [f"{m['name']} ({m['action']})" for m in h.get("monitors", []) if m.get("fired")]
        lines.append(
            f"| {h['round']} | {h['samples']} | {h['passed']} | {h['oracle_calls']} | {h['sun']} | {h['hits']} "
            f"| {_fmt(h.get('mean_acquisition'))} | {_fmt(h.get('best_violation'))} | {_center(h.get('center'))} "
            f"| {_fmt(h.get('guidance'))} | {', '.join(fired) or '-'} | {'; '.join(h.get('steering', [])) or '-'} |"
        )
    front = pareto_rows(rows, cfg)
    lines += ["", "## Pareto front (objective violations, E_hull)", "", "| id | formula | "
              + " | ".join(o.name for o in cfg.objectives) + " | E_hull | S.U.N. | hit |",
              "|---|---|" + "---|" * (len(cfg.objectives) + 3)]  # fmt: skip
    for r in front:
        values = " | ".join(_fmt(_num(r.get(o.name))) for o in cfg.objectives)
        lines.append(f"| {r['id']} | {r.get('formula')} | {values} | {_fmt(_num(r.get('e_hull')))} "
                     f"| {bool(r.get('sun'))} | {bool(r.get('hit'))} |")  # fmt: skip
    lines += ["", "## Plots", ""] + [f"![{p}](plots/{p})" for p in plots]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
