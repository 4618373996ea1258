"""Metrics of property tasks: MAE/RMSE (regression), ROC-AUC/accuracy (classification). Plain numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["roc_auc", "task_metrics", "primary_metric"]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties counting 1/2
    (the Mann-Whitney U statistic divided by n_pos * n_neg; Hanley & McNeil 1982). NaN if one class is absent."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    start = 0
    while start < len(scores):  # average ranks (1-based) over runs of tied scores
        stop = start
        while stop + 1 < len(scores) and sorted_scores[stop + 1] == sorted_scores[start]:
            stop += 1
        ranks[order[start : stop + 1]] = 0.5 * (start + stop) + 1.0
        start = stop + 1
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _labels(target, values: np.ndarray) -> np.ndarray:
    if target.kind == "binary" and target.threshold is not None:
        return (values > target.threshold).astype(np.int64)
    return np.round(values).astype(np.int64)


def task_metrics(
    targets: Sequence, predictions: Sequence[np.ndarray], values: np.ndarray, mask: np.ndarray
) -> dict[str, float]:
    """Metrics of every task over the samples where its target is known.

    Args:
        targets: The tasks (`TargetConfig`).
        predictions: Per task: (N,) physical values / probabilities of label 1, or (N, C) class probabilities.
        values: (N, T) raw target values (physical units or labels).
        mask: (N, T) bool, True where known.

    Returns:
        ``{"mae/<key>", "rmse/<key>"}`` for regression, ``{"roc_auc/<key>", "accuracy/<key>"}`` for binary,
        ``{"accuracy/<key>"}`` for multiclass, and ``"count/<key>"``; a task with no known value is left out.
    """
    out: dict[str, float] = {}
    for t, target in enumerate(targets):
        known = mask[:, t].astype(bool)
        if not known.any():
            continue
        pred, true = np.asarray(predictions[t])[known], values[known, t]
        out[f"count/{target.key}"] = float(known.sum())
        if target.kind == "regression":
            err = pred - true
            out[f"mae/{target.key}"] = float(np.abs(err).mean())
            out[f"rmse/{target.key}"] = float(np.sqrt((err**2).mean()))
        elif target.kind == "binary":
            labels = _labels(target, true)
            out[f"roc_auc/{target.key}"] = roc_auc(pred, labels)
            out[f"accuracy/{target.key}"] = float(((pred > 0.5) == labels.astype(bool)).mean())
        else:
            out[f"accuracy/{target.key}"] = float((pred.argmax(-1) == _labels(target, true)).mean())
    return out


def primary_metric(target) -> str:
    """The headline metric name of a task: ``mae`` (regression), ``roc_auc`` (binary), ``accuracy`` (multiclass)."""
    return {"regression": "mae", "binary": "roc_auc", "multiclass": "accuracy"}[target.kind]
