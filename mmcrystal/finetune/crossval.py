"""`mmcrystal crossval`: Matbench-style k-fold benchmark of fine-tuning arms, with learning curves.

Protocol (Dunn et al. 2020, Matbench: k = 5 folds, fixed seed, mean and std over folds), run in this process:
1. pool = the samples of the chosen splits of a prepared folder that have at least one target value (samples with
   none are counted and logged); optionally a seeded random subsample of ``max_samples``;
2. a seeded permutation cut into ``folds`` near-equal folds; fold f is the test set, the others the train pool;
3. learning curve: for each size n in ``train_sizes`` (capped at the pool; the whole train pool always included as
   ``all``), the first n of a seeded permutation of the train pool (so smaller sets are nested in larger ones);
4. every arm trains for the same ``steps`` at the same ``batch_size`` and learning rate (equal budget) with
   targets normalised by that training subset's statistics, then predicts the test fold;
5. per task: MAE (regression), ROC-AUC (binary) or accuracy (multiclass) per fold; mean and population std.
Model init, batch order and dropout are seeded by (seed, fold), identically for every arm and size.

Arms: ``pretrained`` (backbone weights, ``tuning`` recipe), ``scratch`` (same architecture, random init, full
training), ``frozen`` (pretrained backbone frozen: an MLP probe), ``chgnet`` (frozen CHGNet features) and
``mean`` (no model: the training subset's mean / class frequencies for every test sample, the floor any model
must beat).

    mmcrystal crossval runs/supercon_tc runs/cv_tc --targets '[prop]' --train_sizes '[500]' --steps 200 \
        --backbone runs/align_cpu/lightning_logs/version_0/pretrained
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from encoders import CSPNetConfig, RadiusGraphConfig
from mmcrystal.finetune.backbone import property_model_config, resolve_backbone
from mmcrystal.finetune.config import BackboneConfig, HeadConfig, TuningConfig, parse_target
from mmcrystal.finetune.data import load_prepared_samples, sample_values
from mmcrystal.finetune.heads import normalization_from_values
from mmcrystal.finetune.loop import LoopSettings, predict_draws, train_in_process
from mmcrystal.finetune.metrics import primary_metric, task_metrics
from mmcrystal.finetune.model import PropertyModel

__all__ = ["crossval", "fold_indices", "learning_curve_subsets", "ARMS"]

log = logging.getLogger(__name__)
ARMS = ("pretrained", "scratch", "frozen", "chgnet", "mean")


def fold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """A seeded permutation of range(n) cut into ``folds`` near-equal test folds."""
    if folds < 2 or n < folds:
        raise ValueError(f"need folds >= 2 and at least one sample per fold, got {folds} folds for {n} samples")
    return np.array_split(np.random.default_rng(seed).permutation(n), folds)


def learning_curve_subsets(train_pool: np.ndarray, sizes, seed: int) -> dict[str, np.ndarray]:
    """``{"500": idx, ..., "all": idx}``: nested seeded subsets of the train pool; sizes >= the pool collapse
    into ``all``."""
    order = np.random.default_rng(seed).permutation(train_pool)
    out = {str(int(n)): order[: int(n)] for n in sorted(set(sizes or [])) if 0 < int(n) < len(order)}
    out["all"] = order
    return out


def _arm(name: str, backbone: str, tuning: TuningConfig, crystal) -> tuple[BackboneConfig, TuningConfig]:
    if name == "pretrained":
        return BackboneConfig(source=backbone, pretrained=True, crystal=crystal), tuning
    if name == "scratch":
        return BackboneConfig(source=backbone, pretrained=False, crystal=crystal), TuningConfig(mode="full")
    if name == "frozen":
        return BackboneConfig(source=backbone, pretrained=True, crystal=crystal), TuningConfig(mode="frozen")
    if name == "chgnet":
        return BackboneConfig(source="chgnet"), TuningConfig(mode="frozen")
    raise ValueError(f"unknown arm {name!r}; known: {ARMS}")


def _summarise(runs: list[dict], targets) -> list[dict]:
    """Mean and population std over folds of each (arm, size, task) headline metric."""
    rows = []
    keys = sorted({(r["arm"], r["size"]) for r in runs}, key=lambda k: (k[0], k[1] == "all", k[1].zfill(9)))
    for arm, size in keys:
        chosen = [r for r in runs if r["arm"] == arm and r["size"] == size]
        for target in targets:
            name = f"{primary_metric(target)}/{target.key}"
            values = np.array([r["metrics"].get(name, np.nan) for r in chosen], dtype=np.float64)
            rows.append({
                "arm": arm, "size": size, "task": target.key, "metric": primary_metric(target),
                "folds": values.tolist(), "mean": float(np.nanmean(values)), "std": float(np.nanstd(values)),
                "n_train": float(np.mean([r["n_train"] for r in chosen])),
                "seconds": float(np.sum([r["seconds"] for r in chosen])),
            })  # fmt: skip
    return rows


def _markdown(summary: list[dict], protocol: dict) -> str:
    arms = list(dict.fromkeys(r["arm"] for r in summary))
    lines = [f"## {protocol['title']}", "", f"`{protocol['data']}` ({protocol['pool']} samples in the pool), "
             f"{protocol['folds']}-fold CV, seed {protocol['seed']}, {protocol['steps']} steps x batch "
             f"{protocol['batch_size']} per run, lr {protocol['lr']}.", "",
             "| task | metric | train size | " + " | ".join(arms) + " |",
             "|---|---|---|" + "---|" * len(arms)]  # fmt: skip
    cells: dict[tuple, dict[str, str]] = {}
    for r in summary:
        label = (r["task"], r["metric"], f"{r['size']} ({r['n_train']:.0f})" if r["size"] == "all" else r["size"])
        cells.setdefault(label, {})[r["arm"]] = f"{r['mean']:.4g} ± {r['std']:.2g}"
    for (task, metric, size), by_arm in cells.items():
        lines.append(f"| {task} | {metric} | {size} | " + " | ".join(by_arm.get(a, "") for a in arms) + " |")
    return "\n".join(lines) + "\n"


def _load_pool(data: str, splits, names: list[str], max_samples: int | None, seed: int):
    """Samples of the splits, their (N, P) property values and the indices of the pool (samples with a target)."""
    samples, _ = load_prepared_samples(data, splits)
    values = sample_values(samples, names)
    has_target = np.isfinite(values).any(axis=1)
    if not has_target.all():
        log.warning("crossval: %d of %d samples have none of %s; left out", int((~has_target).sum()), len(samples),
                    names)  # fmt: skip
    pool = np.flatnonzero(has_target)
    if max_samples is not None and len(pool) > max_samples:
        pool = np.sort(np.random.default_rng(seed).choice(pool, max_samples, replace=False))
    return samples, values, pool


def _score_constant(targets, train_set, test_set) -> dict:
    """The ``mean`` arm: every test sample gets the training subset's mean (regression) or class frequencies."""
    (_, train_values), (test_samples, test_values) = train_set, test_set
    n, preds = len(test_samples), []
    for t, target in enumerate(targets):
        known = train_values[np.isfinite(train_values[:, t]), t]
        if target.kind == "regression":
            preds.append(np.full(n, known.mean()))
        else:
            labels = (known > target.threshold) if target.threshold is not None else np.round(known)
            counts = np.bincount(labels.astype(np.int64), minlength=target.num_outputs if target.num_outputs > 1 else 2)
            frequencies = counts / counts.sum()
            preds.append(np.full(n, frequencies[1]) if target.kind == "binary" else np.tile(frequencies, (n, 1)))
    metrics = task_metrics(targets, preds, np.nan_to_num(test_values), np.isfinite(test_values))
    return {"n_train": len(train_set[0]), "n_test": n, "metrics": metrics, "final_train_loss": float("nan"),
            "seconds": 0.0}  # fmt: skip


def _train_and_score(model: PropertyModel, train_set, test_set, settings: LoopSettings, eval_batch_size: int) -> dict:
    """Normalise targets with the training subset's statistics, train in process, score the test fold."""
    start = time.perf_counter()
    (train_samples, train_values), (test_samples, test_values) = train_set, test_set
    model.set_normalization(normalization_from_values(train_values, model.targets))
    losses = train_in_process(model, train_samples, settings)
    preds = predict_draws(model, test_samples, eval_batch_size)[0]
    metrics = task_metrics(model.targets, preds, np.nan_to_num(test_values), np.isfinite(test_values))
    return {"n_train": len(train_samples), "n_test": len(test_samples), "metrics": metrics,
            "final_train_loss": float(np.mean(losses[-10:])), "seconds": time.perf_counter() - start}  # fmt: skip


def crossval(
    data: str,
    out: str,
    targets: list[str] | None = None,
    backbone: str = "scratch",
    arms: list[str] | None = None,
    splits: list[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    train_sizes: list[int] | None = None,
    max_samples: int | None = None,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    warmup_steps: int = 20,
    head: HeadConfig | None = None,
    tuning: TuningConfig | None = None,
    crystal: CSPNetConfig | RadiusGraphConfig | None = None,
    eval_batch_size: int = 128,
    title: str | None = None,
) -> dict:
    """k-fold cross-validation of fine-tuning arms at equal budget, with an optional learning curve.

    Args:
        data: Prepared folder (``mmcrystal prepare`` output) whose samples carry the target properties.
        out: Output folder for ``crossval.json`` (protocol, every run, summary) and ``crossval.md``.
        targets: Tasks (required): ``name`` (regression, MAE) or ``name>threshold`` (binary, ROC-AUC), e.g.
            ``--targets '[band_gap, band_gap>0]'``.
        backbone: Source of the ``pretrained``/``scratch``/``frozen`` arms: an alignment export folder or
            checkpoint, or ``scratch`` (then only the ``scratch`` arm makes sense).
        arms: Arms to run (see module docstring); default ``[pretrained, scratch]`` (``[scratch]`` for a scratch
            backbone).
        splits: Splits of ``data`` to pool (default: all of them).
        folds: Number of folds k.
        seed: Seed of the folds, the subsets, model init, batch order and dropout.
        train_sizes: Learning-curve training-set sizes (e.g. ``[500, 2000]``); the full train pool is always run.
        max_samples: Cap the pool with a seeded random subsample (say so when reporting).
        steps: Optimiser steps per run (every arm, every size).
        batch_size: Crystals per step.
        lr: Peak learning rate of the head (the backbone's follows ``tuning``).
        warmup_steps: Linear warm-up steps.
        head: The MLP head (default `HeadConfig()`).
        tuning: Tuning recipe of the ``pretrained`` arm (default: full fine-tuning).
        crystal: The crystal encoder of a ``scratch`` backbone (default ``CSPNetConfig()``); ignored for a path.
        eval_batch_size: Crystals per prediction pass.
        title: Heading of the markdown table.

    Returns:
        ``{"protocol", "runs", "summary"}`` (also written to ``out/crossval.json``).
    """
    if not targets:
        raise ValueError("crossval needs targets, e.g. --targets '[formation_energy_per_atom]'")
    tasks = [parse_target(t) for t in targets]
    arms = list(arms or (["scratch"] if backbone == "scratch" else ["pretrained", "scratch"]))
    names = list(dict.fromkeys(t.name for t in tasks))
    samples, values, pool = _load_pool(data, splits, names, max_samples, seed)
    values = values[:, [names.index(t.name) for t in tasks]]  # (N, T), one column per task
    head, tuning = head or HeadConfig(), tuning or TuningConfig()
    resolved = {arm: _arm(arm, backbone, tuning, crystal) for arm in arms if arm != "mean"}
    resolved = {arm: (resolve_backbone(b, t.mode), t) for arm, (b, t) in resolved.items()}
    runs = []
    for fold, test in enumerate(fold_indices(len(pool), folds, seed)):
        train_pool = np.setdiff1d(np.arange(len(pool)), test)
        test_set = ([samples[i] for i in pool[test]], values[pool[test]])
        settings = LoopSettings(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, seed=seed + fold)
        for size, subset in learning_curve_subsets(train_pool, train_sizes, seed + fold).items():
            train_set = ([samples[i] for i in pool[subset]], values[pool[subset]])
            if "mean" in arms:
                runs.append({"arm": "mean", "size": size, "fold": fold, **_score_constant(tasks, train_set, test_set)})
            for arm, (backbone_parts, arm_tuning) in resolved.items():
                torch.manual_seed(seed * 1000 + fold)  # same head init for every arm and size of a fold
                config = property_model_config(backbone_parts, tasks, head, arm_tuning)
                run = _train_and_score(PropertyModel(config, backbone_parts.state), train_set, test_set, settings,
                                       eval_batch_size)  # fmt: skip
                runs.append({"arm": arm, "size": size, "fold": fold, **run})
                headline = {k: round(v, 4) for k, v in run["metrics"].items() if k.startswith(("mae", "roc_auc"))}
                log.info("crossval: fold %d size %s arm %s: %s (%.1f s)", fold, size, arm, headline, run["seconds"])
    protocol = {
        "title": title or f"{', '.join(t.key for t in tasks)} on {data}",
        "data": data, "splits": splits or "all", "pool": int(len(pool)), "max_samples": max_samples,
        "folds": folds, "seed": seed, "train_sizes": train_sizes, "steps": steps, "batch_size": batch_size,
        "lr": lr, "warmup_steps": warmup_steps, "backbone": backbone, "arms": arms,
        "head": asdict(head), "tuning": asdict(tuning), "targets": [asdict(t) for t in tasks],
        "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
    result = {"protocol": protocol, "runs": runs, "summary": _summarise(runs, tasks)}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "crossval.json").write_text(json.dumps(result, indent=1))
    (out_dir / "crossval.md").write_text(_markdown(result["summary"], protocol))
    log.info("crossval: wrote %s", out_dir / "crossval.md")
    return result
