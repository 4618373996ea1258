"""Tiny prepared datasets for task tests: real MP-40 structures with their captions, a few dozen of them."""

from __future__ import annotations

import pytest

from mmcrystal.data.prepare import PrepareConfig, prepare_sources
from mmcrystal.data.readers import SourceSpec


@pytest.fixture(scope="session")
def mp40_tiny(tmp_path_factory, shared_data):
    """48 train + 32 val MP-40 structures (<= 40 atoms) with one caption each."""
    out = tmp_path_factory.mktemp("mp40_tiny")
    csv = str(shared_data / "mp_40_text" / "test.csv")
    random_csv = str(shared_data / "mp_40_text" / "random_split_test.csv")
    cfg = PrepareConfig(samples_per_shard=64, workers=0, limit=48)
    cfg.validation.max_atoms = 24
    prepare_sources([SourceSpec(csv, split="train"), SourceSpec(random_csv, split="val")], out, cfg, progress=False)
    return out
