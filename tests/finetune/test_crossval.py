"""Cross-validation: folds and nested learning-curve subsets, determinism, arms at equal budget, ROC-AUC."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmcrystal.finetune.config import HeadConfig
from mmcrystal.finetune.crossval import crossval, fold_indices, learning_curve_subsets
from mmcrystal.finetune.data import load_prepared_samples, sample_values
from mmcrystal.finetune.metrics import roc_auc, task_metrics


def test_folds_partition_and_subsets_nest():
    folds = fold_indices(23, 5, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert {len(f) for f in folds} == {4, 5}
    assert [f.tolist() for f in fold_indices(23, 5, seed=1)] == [f.tolist() for f in folds]
    subsets = learning_curve_subsets(np.arange(100), [10, 40, 500], seed=0)
    assert list(subsets) == ["10", "40", "all"]  # 500 >= the pool: only "all"
    assert set(subsets["10"]) <= set(subsets["40"]) <= set(subsets["all"]) and len(subsets["all"]) == 100
    with pytest.raises(ValueError, match="folds"):
        fold_indices(3, 5, seed=0)


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    scores, labels = np.round(rng.random(60), 1), rng.random(60) > 0.6  # rounded: many ties
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert roc_auc(scores, labels) == pytest.approx(pairwise)
    assert roc_auc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert np.isnan(roc_auc(np.array([0.1, 0.9]), np.array([1, 1])))


def test_task_metrics_use_only_known_values():
    from mmcrystal.finetune.config import TargetConfig

    targets = [TargetConfig(name="a"), TargetConfig(name="a", kind="binary", threshold=1.0)]
    values = np.array([[0.0, 0.0], [2.0, 2.0], [100.0, 100.0]])
    mask = np.array([[True, True], [True, True], [False, False]])
    metrics = task_metrics(targets, [np.array([1.0, 2.0, 0.0]), np.array([0.2, 0.7, 0.1])], values, mask)
    assert metrics["mae/a"] == 0.5 and metrics["count/a"] == 2
    assert metrics["roc_auc/a>1"] == 1.0 and metrics["accuracy/a>1"] == 1.0


def test_crossval_is_deterministic_and_runs_every_arm_size_and_fold(mp40_tiny, aligned_export, tmp_path):
    kwargs = dict(data=str(mp40_tiny), targets=["band_gap", "band_gap>0"], backbone=str(aligned_export),
                  arms=["pretrained", "scratch", "frozen", "mean"], folds=3, seed=7, train_sizes=[16, 10_000], steps=6,
                  batch_size=8, head=HeadConfig(hidden_dims=[8]))  # fmt: skip
    first = crossval(out=str(tmp_path / "a"), **kwargs)
    second = crossval(out=str(tmp_path / "b"), **kwargs)
    assert [r["metrics"] for r in first["runs"]] == [r["metrics"] for r in second["runs"]]
    assert len(first["runs"]) == 3 * 2 * 4  # folds x sizes (16, all) x arms
    pool = first["protocol"]["pool"]
    assert {r["n_train"] for r in first["runs"] if r["size"] == "all"} <= {pool - pool // 3, pool - pool // 3 - 1}
    by_arm = {arm: [r["metrics"]["mae/band_gap"] for r in first["runs"] if r["arm"] == arm] for arm in kwargs["arms"]}
    assert by_arm["pretrained"] != by_arm["scratch"]  # the arms differ in their initial weights only
    # the mean arm: the training subset's mean for every test sample; a constant score has ROC-AUC 1/2
    assert all(r["metrics"]["roc_auc/band_gap>0"] == 0.5 for r in first["runs"] if r["arm"] == "mean")
    values = sample_values(load_prepared_samples(str(mp40_tiny))[0], ["band_gap"])[:, 0]
    pool = np.flatnonzero(np.isfinite(values))
    test = fold_indices(len(pool), 3, seed=7)[0]
    train = np.setdiff1d(np.arange(len(pool)), test)
    expected = np.abs(values[pool[test]] - values[pool[train]].mean()).mean()
    mean_all = next(r for r in first["runs"] if r["arm"] == "mean" and r["size"] == "all" and r["fold"] == 0)
    assert mean_all["metrics"]["mae/band_gap"] == pytest.approx(expected)
    summary = {(r["arm"], r["size"], r["task"]): r for r in first["summary"]}
    assert summary[("scratch", "16", "band_gap>0")]["metric"] == "roc_auc"
    row = summary[("pretrained", "all", "band_gap")]
    assert row["mean"] == pytest.approx(np.mean(row["folds"])) and len(row["folds"]) == 3
    saved = json.loads((tmp_path / "a" / "crossval.json").read_text())
    assert saved["protocol"]["steps"] == 6 and saved["protocol"]["arms"] == kwargs["arms"]
    table = (tmp_path / "a" / "crossval.md").read_text()
    assert "| band_gap | mae | 16 |" in table and "pretrained" in table
