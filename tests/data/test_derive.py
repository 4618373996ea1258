"""`prepare --modalities captions,xrd,micrograph`: every sample carries them with presence flags; DOS stays absent."""

from __future__ import annotations

import numpy as np
import pytest

from mmcrystal.data.datamodule import CrystalDataModule
from mmcrystal.data.prepare import PrepareConfig, prepare_sources
from mmcrystal.data.readers import SourceSpec


@pytest.fixture(scope="module")
def with_modalities(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("modalities")
    cfg = PrepareConfig(samples_per_shard=20, workers=0, limit=40, modalities=["captions", "xrd", "micrograph"])
    sources = [SourceSpec(str(shared_data / "mp_20" / "val.csv.gz"), split="val"),
               SourceSpec(str(shared_data / "mp_40_text" / "test.csv"), split="test")]  # fmt: skip
    manifest = prepare_sources(sources, out, cfg, progress=False)
    return out, manifest


def test_modalities_present_with_flags(with_modalities):
    out, manifest = with_modalities
    assert manifest["modalities"]["xrd"]["n_bins"] == 1024
    dm = CrystalDataModule(root=str(out), batch_size=40, test_split="val")
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert batch.xrd.shape == (40, 1024) and bool(batch.xrd_mask.all())
    assert batch.image.shape == (40, 1, 64, 64) and bool(batch.image_mask.all())
    assert bool(batch.caption_mask.all()) and batch.dos is None and not batch.dos_mask.any()
    assert np.allclose(batch.xrd.max(dim=1).values.numpy(), 1.0)  # max-normalised patterns
    # generated captions name the crystal system that spglib found (checked in depth in test_captions.py)
    from mmcrystal.data.symmetry import CRYSTAL_SYSTEMS

    for caption, system in zip(batch.captions, batch.crystal_system.tolist(), strict=True):
        assert CRYSTAL_SYSTEMS[system] in caption.lower()


def test_provided_captions_are_kept(with_modalities, shared_data):
    import pandas as pd

    out, _ = with_modalities
    prompts = pd.read_csv(shared_data / "mp_40_text" / "test.csv", nrows=40).set_index("material_id")["prompt"]
    dm = CrystalDataModule(root=str(out), batch_size=40, test_split="test")
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert all(caption == prompts[mid] for mid, caption in zip(batch.ids, batch.captions, strict=True))


def test_precomputed_symmetry_gives_the_same_captions(mp20_structures):
    from mmcrystal.data.derive import _seed, derive_modalities
    from mmcrystal.data.record import CrystalRecord
    from mmcrystal.data.symmetry import annotate_symmetry
    from mmcrystal.modalities.captions import generate_captions

    records = [CrystalRecord(f"r{i}", s, {"band_gap": 1.0}) for i, s in enumerate(mp20_structures[:8])]
    annotate_symmetry(records)
    derive_modalities(records, ["captions"])
    for r in records:
        assert r.captions == generate_captions(r.structure, r.properties, 5, _seed(r.id))
