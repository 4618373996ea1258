"""`embed` and `search` over a prepared split with a saved aligned model."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from mmcrystal.embed import embed, search


def _tiny_model_dir(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "tasks"))
    from test_alignment import tiny_task

    return tiny_task().eval().save_pretrained(tmp_path / "model")


def test_embed_writes_every_sample(tmp_path, mp40_tiny):
    from mmcrystal.data.datamodule import load_manifest

    model = _tiny_model_dir(tmp_path)
    out = embed(str(model), str(mp40_tiny), str(tmp_path / "emb.npz"), split="val")
    arrays = np.load(out)
    n = load_manifest(str(mp40_tiny))["splits"]["val"]["accepted"]
    assert arrays["crystal"].shape == (n, 32) and arrays["ids"].shape == (n,)
    np.testing.assert_allclose(np.linalg.norm(arrays["crystal"], axis=1), 1.0, rtol=1e-5)


def test_search_by_cif_finds_the_same_structure_first(tmp_path, mp40_tiny, shared_data):
    model = _tiny_model_dir(tmp_path)
    ids = np.load(embed(str(model), str(mp40_tiny), str(tmp_path / "e.npz"), split="val"))["ids"]
    frame = pd.read_csv(shared_data / "mp_40_text" / "random_split_test.csv").set_index("material_id")
    target = str(ids[3])
    path = tmp_path / "query.cif"
    Structure.from_str(frame.loc[target, "cif"], fmt="cif").to(filename=str(path))
    results = search(str(model), str(mp40_tiny), split="val", cif=str(path), top_k=5, cache=str(tmp_path / "e.npz"))
    assert results[0]["id"] == target and results[0]["score"] > 0.999
    by_text = search(str(model), str(mp40_tiny), split="val", text="a cubic oxide", top_k=4)
    assert [r["rank"] for r in by_text] == [1, 2, 3, 4]
    assert by_text[0]["score"] >= by_text[-1]["score"]
