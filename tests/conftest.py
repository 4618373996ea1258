"""Shared fixtures: seeded RNGs, the path to the read-only public datasets, small real structures."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

# Real public datasets live beside the checkout (never copied into the repo). CI has them at the same place.
SHARED_DATA = Path(os.environ.get("MMCRYSTAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread per test: on the shared 2-core machines two threads made small ops much slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (set MMCRYSTAL_SHARED_DATA)")
    return SHARED_DATA


def _read_structures(path: Path, n: int):
    import pandas as pd
    from pymatgen.core import Structure

    frame = pd.read_csv(path, nrows=n)
    return [Structure.from_str(cif, fmt="cif") for cif in frame["cif"]]


@pytest.fixture(scope="session")
def mp20_structures(shared_data):
    """First 64 MP-20 test structures (1-20 atoms, many space groups)."""
    return _read_structures(shared_data / "mp_20" / "test.csv.gz", 64)


@pytest.fixture(scope="session")
def perov_structures(shared_data):
    """First 16 Perov-5 test structures (5-atom cubic cells)."""
    return _read_structures(shared_data / "perov_5" / "test.csv", 16)


@pytest.fixture(scope="session")
def mp40_tiny(tmp_path_factory, shared_data):
    """Up to 48 train + 48 val real MP-40 structures (<= 24 atoms) with their captions, prepared as shards."""
    from mmcrystal.data.prepare import PrepareConfig, prepare_sources
    from mmcrystal.data.readers import SourceSpec

    out = tmp_path_factory.mktemp("mp40_tiny")
    csv = str(shared_data / "mp_40_text" / "test.csv")
    random_csv = str(shared_data / "mp_40_text" / "random_split_test.csv")
    cfg = PrepareConfig(samples_per_shard=64, workers=0, limit=48)
    cfg.validation.max_atoms = 24
    prepare_sources([SourceSpec(csv, split="train"), SourceSpec(random_csv, split="val")], out, cfg, progress=False)
    return out
