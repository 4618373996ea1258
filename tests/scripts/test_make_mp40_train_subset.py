"""scripts/make_mp40_train_subset.py: random-split rows inside the time split's training period, never a test row."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parents[2] / "scripts" / "make_mp40_train_subset.py"
_spec = importlib.util.spec_from_file_location("make_mp40_train_subset", _PATH)
subset_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(subset_script)


def test_keeps_only_rows_before_the_test_window_and_outside_the_test_file():
    test = pd.DataFrame({"material_id": ["mp-1", "mp-2"], "created_at": ["2019-01-01", "2020-06-01"]})
    random_test = pd.DataFrame({
        "material_id": ["mp-1", "mp-3", "mp-4", "mp-5", "mp-6"],
        "created_at": ["2019-01-01", "2012-03-04", "2019-05-05", "not a date", "2018-12-31 23:59:59"],
    })  # fmt: skip
    subset, counts = subset_script.train_subset(test, random_test)
    assert subset["material_id"].tolist() == ["mp-3", "mp-6"]
    assert counts == {"read": 5, "kept": 2, "in_time_split_test": 1, "no_created_at": 1, "created_in_test_window": 1}


def test_names_a_missing_column():
    with pytest.raises(ValueError, match="random_split_test.*created_at"):
        subset_script.train_subset(pd.DataFrame({"material_id": [], "created_at": []}),
                                   pd.DataFrame({"material_id": ["mp-1"]}))  # fmt: skip


def test_mirror_subset_has_no_test_structure(shared_data, tmp_path):
    folder = shared_data / "mp_40_text"
    if not (folder / "random_split_test.csv").is_file():
        pytest.skip("no MP-40 random split in the mirror")
    out = tmp_path / "subset.csv"
    assert subset_script.main([str(folder), str(out)]) == 0
    subset, test = pd.read_csv(out), pd.read_csv(folder / "test.csv")
    assert len(subset) > 600 and not subset["material_id"].isin(test["material_id"]).any()
    assert pd.to_datetime(subset["created_at"]).max() < pd.to_datetime(test["created_at"]).min()
    assert {"cif", "prompt"} <= set(subset.columns)
