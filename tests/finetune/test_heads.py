"""Targets, normalisation and the masked multi-task loss against hand-written formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmcrystal.finetune.config import TargetConfig, parse_target
from mmcrystal.finetune.heads import (
    normalization_from_manifest,
    normalization_from_values,
    normalization_vectors,
    output_slices,
    property_loss,
)

TARGETS = [
    TargetConfig(name="gap"),
    TargetConfig(name="gap", kind="binary", threshold=0.5),
    TargetConfig(name="phase", kind="multiclass", num_classes=3),
    TargetConfig(name="ef", loss="mse"),
]


def test_parse_target_and_keys():
    assert parse_target("band_gap") == TargetConfig(name="band_gap")
    binary = parse_target("band_gap>0")
    assert (binary.kind, binary.threshold, binary.key) == ("binary", 0.0, "band_gap>0")
    assert TargetConfig(name="prop", label="minus_tc").key == "minus_tc"
    assert [s.stop - s.start for s in output_slices(TARGETS)] == [1, 1, 3, 1]
    with pytest.raises(ValueError, match="kind"):
        TargetConfig(name="x", kind="ordinal")
    with pytest.raises(ValueError, match="loss"):
        TargetConfig(name="x", loss="l4")


def test_loss_matches_hand_computation_per_task():
    torch.manual_seed(0)
    outputs = torch.randn(6, 6)
    values = torch.tensor([[0.2, 0.2, 0, -1.0], [1.5, 1.5, 2, -2.0], [0.9, 0.9, 1, 0.5],
                           [3.0, 3.0, 0, 1.0], [0.0, 0.0, 2, 0.0], [2.0, 2.0, 1, -0.5]])  # fmt: skip
    mask = torch.ones(6, 4, dtype=torch.bool)
    mask[0, 0] = mask[0, 1] = mask[3, 2] = mask[5, 3] = False
    mean, std = normalization_vectors({"gap": {"mean": 1.0, "std": 2.0}, "ef": {"mean": -0.5, "std": 0.5}}, TARGETS)
    total, parts = property_loss(outputs, values, mask, TARGETS, mean, std)
    k = mask[:, 0]
    expected = {
        "gap": (outputs[k, 0] - (values[k, 0] - 1.0) / 2.0).abs().mean(),
        "gap>0.5": F.binary_cross_entropy_with_logits(outputs[k, 1], (values[k, 1] > 0.5).float()),
        "phase": F.cross_entropy(outputs[mask[:, 2], 2:5], values[mask[:, 2], 2].long()),
        "ef": ((outputs[mask[:, 3], 5] - (values[mask[:, 3], 3] + 0.5) / 0.5) ** 2).mean(),
    }
    for key, value in expected.items():
        torch.testing.assert_close(parts[key][0], value)
    torch.testing.assert_close(total, torch.stack(list(expected.values())).mean())
    assert parts["phase"][1] == 5


def test_masked_values_never_matter_and_get_no_gradient():
    outputs = torch.randn(4, 6, requires_grad=True)
    values = torch.rand(4, 4) * 2
    values[:, 2] = torch.tensor([0.0, 1.0, 2.0, 1.0])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]], dtype=torch.bool)
    mean, std = torch.zeros(4), torch.ones(4)
    loss, _ = property_loss(outputs, values, mask, TARGETS, mean, std)
    garbage = values.clone()
    garbage[~mask] = 1e6  # would dominate every loss if it leaked (and is an invalid class label)
    loss_garbage, _ = property_loss(outputs, garbage, mask, TARGETS, mean, std)
    torch.testing.assert_close(loss, loss_garbage)
    loss.backward()
    assert torch.all(outputs.grad[1, 0:2] == 0) and torch.all(outputs.grad[2, 2:5] == 0) and outputs.grad[3, 5] == 0
    assert torch.all(outputs.grad[0] != 0)


def test_task_without_known_value_drops_out_of_the_total():
    outputs = torch.randn(3, 6, requires_grad=True)
    values, mask = torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.bool)
    mask[:, 0] = True
    total, parts = property_loss(outputs, values, mask, TARGETS, torch.zeros(4), torch.ones(4))
    assert set(parts) == {"gap"}
    torch.testing.assert_close(total, parts["gap"][0])
    mask[:] = False
    total, parts = property_loss(outputs, values, mask, TARGETS, torch.zeros(4), torch.ones(4))
    assert parts == {} and total.item() == 0.0
    total.backward()  # graph-connected zero: DDP and the optimiser see every parameter
    assert outputs.grad is not None


def test_bad_labels_raise_with_the_task_name():
    outputs, mask = torch.randn(2, 6), torch.ones(2, 4, dtype=torch.bool)
    values = torch.tensor([[0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # class 3 of 3 classes
    with pytest.raises(ValueError, match="phase"):
        property_loss(outputs, values, mask, TARGETS, torch.zeros(4), torch.ones(4))
    plain_binary = [TargetConfig(name="is_metal", kind="binary")]
    with pytest.raises(ValueError, match="is_metal"):
        property_loss(torch.randn(2, 1), torch.tensor([[0.0], [0.7]]), torch.ones(2, 1, dtype=torch.bool),
                      plain_binary, torch.zeros(1), torch.ones(1))  # fmt: skip


def test_normalisation_from_manifest_and_from_values():
    manifest = {
        "property_names": ["gap", "ef"],
        "normalization": {"reference_split": "train", "properties": {"gap": {"count": 3, "mean": 1.0, "std": 0.0}}},
    }
    stats = normalization_from_manifest(manifest, [TargetConfig(name="gap")])
    assert stats == {"gap": {"mean": 1.0, "std": 1.0}}  # a constant target keeps std 1 (no division by zero)
    with pytest.raises(KeyError, match="phase"):
        normalization_from_manifest(manifest, [TargetConfig(name="phase")])
    with pytest.raises(ValueError, match="ef"):
        normalization_from_manifest(manifest, [TargetConfig(name="ef")])
    values = np.array([[1.0, np.nan], [3.0, 2.0], [np.nan, 4.0]])
    stats = normalization_from_values(values, [TargetConfig(name="gap"), TargetConfig(name="ef")])
    assert stats["gap"] == {"mean": 2.0, "std": 1.0} and stats["ef"] == {"mean": 3.0, "std": 1.0}
