"""`mmcrystal predict` on CIF folders, CSV files and prepared splits; ensembles; unreadable records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmcrystal.cli import main
from mmcrystal.finetune.predictor import PropertyPredictor


@pytest.fixture
def model_dirs(make_model, tmp_path):
    folders = []
    for seed in (0, 1):
        folders += PropertyPredictor([make_model(seed=seed)]).save_pretrained(tmp_path / f"model_{seed}")
    return folders


def test_predict_a_cif_folder_skips_and_counts_unreadable_files(model_dirs, mp20_structures, tmp_path, caplog):
    cifs = tmp_path / "cifs"
    cifs.mkdir()
    for i, structure in enumerate(mp20_structures[:4]):
        structure.to(filename=str(cifs / f"s{i}.cif"))
    (cifs / "broken.cif").write_text("data_broken\n_cell_length_a 3\n")
    out = tmp_path / "pred.csv"
    main(["predict", "--model", str(model_dirs[0]), "--input", str(cifs), "--out", str(out)])
    frame = pd.read_csv(out)
    assert list(frame["id"]) == ["s0", "s1", "s2", "s3"]
    assert list(frame.columns) == ["id", "band_gap_mean", "band_gap_std", "band_gap>0_mean", "band_gap>0_std",
                                   "energy_above_hull_mean", "energy_above_hull_std"]  # fmt: skip
    assert (frame["band_gap_std"] == 0).all()
    assert "skipping broken" in caplog.text and "1 skipped" in caplog.text
    expected, _ = PropertyPredictor.from_pretrained(model_dirs[0]).predict(mp20_structures[:4])
    np.testing.assert_allclose(frame["band_gap_mean"], expected[:, 0], rtol=1e-5)


def test_predict_a_prepared_split_with_an_ensemble_writes_truth_and_spread(model_dirs, mp40_tiny, tmp_path):
    out = tmp_path / "pred.csv"
    main(
        [
            "predict",
            "--model",
            ",".join(str(d) for d in model_dirs),
            "--input",
            str(mp40_tiny),
            "--split",
            "val",
            "--out",
            str(out),
        ]
    )
    frame = pd.read_csv(out)
    from mmcrystal.data.datamodule import load_manifest

    assert len(frame) == load_manifest(str(mp40_tiny))["splits"]["val"]["accepted"]
    assert (frame["band_gap_std"] > 0).all()
    assert "band_gap_true" in frame and set(frame["band_gap>0_true"].dropna()) <= {0.0, 1.0}


def test_predict_a_csv_and_an_ensemble_folder(model_dirs, shared_data, tmp_path):
    out = tmp_path / "pred.csv"
    frame_in = pd.read_csv(shared_data / "perov_5" / "test.csv", nrows=5)
    frame_in.to_csv(tmp_path / "in.csv", index=False)
    main(
        ["predict", "--model", str(tmp_path), "--input", str(tmp_path / "in.csv"), "--out", str(out)]
    )  # tmp_path holds model_0, model_1
    frame = pd.read_csv(out)
    assert [str(i) for i in frame["id"]] == [str(i) for i in frame_in["material_id"]]
    assert (frame["energy_above_hull_std"] > 0).all()
