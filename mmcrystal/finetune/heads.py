"""The property head, target normalisation and the masked multi-task loss.

Layout of the head's output (B, O): the tasks' outputs side by side in `PropertyModelConfig.targets` order, one
column per regression or binary task (a value in normalised units, or a logit), ``num_classes`` columns per
multiclass task (logits). A missing target (``mask`` False) contributes nothing to its task's loss; a task with no
present value in a batch contributes nothing to the total.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmcrystal.finetune.config import HeadConfig, TargetConfig

__all__ = [
    "PropertyHead",
    "output_slices",
    "target_labels",
    "property_loss",
    "normalization_from_manifest",
    "normalization_from_values",
    "normalization_vectors",
]

_ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}


def output_slices(targets: Sequence[TargetConfig]) -> list[slice]:
    """Column range of each task in the head's (B, O) output."""
    slices, start = [], 0
    for target in targets:
        slices.append(slice(start, start + target.num_outputs))
        start += target.num_outputs
    return slices


class PropertyHead(nn.Module):
    """Optional LayerNorm, an MLP trunk, then one linear output layer for all tasks.

    Args:
        in_dim: Width of the pooled embedding.
        config: `HeadConfig`.
        targets: The tasks (their ``num_outputs`` sum to the output width).
    """

    def __init__(self, in_dim: int, config: HeadConfig, targets: Sequence[TargetConfig]):
        super().__init__()
        if config.activation not in _ACTIVATIONS:
            raise ValueError(f"head.activation must be one of {sorted(_ACTIVATIONS)}, got {config.activation!r}")
        if not targets:
            raise ValueError("a property head needs at least one target")
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)] if config.input_norm else []
        width = in_dim
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[config.activation](), nn.Dropout(config.dropout)]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Linear(width, sum(t.num_outputs for t in targets))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(pooled))  # (B, O)


def target_labels(target: TargetConfig, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Raw column values (B,) -> what the loss compares with: the values (regression), 0/1 (binary) or class ids.

    Raises:
        ValueError: A present value that is not a valid label (binary without threshold: not 0/1; multiclass: not
            an integer in [0, num_classes)).
    """
    if target.kind == "regression":
        return values
    if target.kind == "binary":
        if target.threshold is not None:
            return (values > target.threshold).to(values.dtype)
        bad = mask & (values != 0) & (values != 1)
        if bool(bad.any()):
            raise ValueError(f"binary target {target.key!r} without threshold needs 0/1 labels, got {values[bad][:5]}")
        return values
    bad = mask & ((values != values.round()) | (values < 0) | (values >= target.num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"multiclass target {target.key!r} needs integer labels in [0, {target.num_classes}), got {values[bad][:5]}"
        )
    return values.round().long().clamp(0, target.num_classes - 1)


def _regression_loss(kind: str, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    if kind == "mae":
        return (pred - true).abs()
    if kind == "huber":
        return F.huber_loss(pred, true, reduction="none", delta=1.0)
    return (pred - true) ** 2


def property_loss(
    outputs: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    targets: Sequence[TargetConfig],
    mean: torch.Tensor,
    std: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, int]]]:
    """Masked multi-task loss.

    Args:
        outputs: (B, O) head output.
        values: (B, T) raw target values in physical units (anything where ``mask`` is False).
        mask: (B, T) bool, True where the target is known.
        targets: The T tasks.
        mean, std: (T,) normalisation of regression targets (0 and 1 for classification tasks).

    Returns:
        ``(total, parts)``: the weighted mean over tasks with at least one known value (a graph-connected zero
        when no task has one), and ``{task key: (loss, number of known values)}``.
    """
    parts: dict[str, tuple[torch.Tensor, int]] = {}
    total, weights = outputs.sum() * 0.0, 0.0
    for t, (target, cols) in enumerate(zip(targets, output_slices(targets), strict=True)):
        known = mask[:, t]
        count = int(known.sum())
        if count == 0:
            continue
        labels = target_labels(target, values[:, t], known)[known]
        logits = outputs[known, cols]  # (n, k)
        if target.kind == "regression":
            loss = _regression_loss(target.loss, logits[:, 0], (labels - mean[t]) / std[t]).mean()
        elif target.kind == "binary":
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels)
        else:
            loss = F.cross_entropy(logits, labels)
        parts[target.key] = (loss, count)
        total, weights = total + target.weight * loss, weights + target.weight
    return (total / weights if weights else total), parts


# ------------------------------------------------------------------------------------------------ normalisation
def _checked(name: str, mean: float, std: float) -> dict[str, float]:
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise ValueError(f"normalisation of {name!r} is not finite (mean {mean}, std {std})")
    return {"mean": float(mean), "std": float(std) if std > 1e-8 else 1.0}


def normalization_from_manifest(manifest: dict, targets: Sequence[TargetConfig]) -> dict[str, dict[str, float]]:
    """Mean and std of each regression target on the manifest's reference (train) split.

    Raises:
        KeyError: A target that is not a property of the prepared data (names the available ones).
    """
    available = manifest.get("property_names", [])
    stats = manifest.get("normalization", {}).get("properties", {})
    out = {}
    for target in targets:
        if target.name not in available:
            raise KeyError(f"target {target.name!r} is not a property of the prepared data; it has {available}")
        if target.kind != "regression":
            continue
        entry = stats.get(target.name, {})
        if not entry.get("count"):
            split = manifest.get("normalization", {}).get("reference_split")
            raise ValueError(f"target {target.name!r} has no value in the reference split {split!r}")
        out[target.name] = _checked(target.name, entry["mean"], entry["std"])
    return out


def normalization_from_values(values: np.ndarray, targets: Sequence[TargetConfig]) -> dict[str, dict[str, float]]:
    """Mean and std of each regression target from a (N, T) array with NaN where missing (a training subset)."""
    out = {}
    for t, target in enumerate(targets):
        if target.kind != "regression":
            continue
        column = values[:, t][np.isfinite(values[:, t])]
        if column.size == 0:
            raise ValueError(f"target {target.name!r} has no known value in the training data")
        out[target.name] = _checked(target.name, column.mean(), column.std())
    return out


def normalization_vectors(
    normalization: dict | None, targets: Sequence[TargetConfig]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(T,) mean and std tensors in target order; classification tasks get 0 and 1."""
    mean, std = torch.zeros(len(targets)), torch.ones(len(targets))
    for t, target in enumerate(targets):
        if target.kind == "regression" and normalization and target.name in normalization:
            mean[t], std[t] = normalization[target.name]["mean"], normalization[target.name]["std"]
    return mean, std
