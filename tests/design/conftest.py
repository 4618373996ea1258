"""Fixtures of the design tests: the toy problem's training structures (see design_toys.py) and a tiny real
decoder."""

from __future__ import annotations

import pytest
import torch
from design_toys import write_reference


@pytest.fixture(scope="module")
def toy_reference(tmp_path_factory) -> tuple[str, str]:
    """(folder of 30 toy training CIFs, cache folder for the reference index)."""
    root = tmp_path_factory.mktemp("design_reference")
    return write_reference(root / "train", n=30), str(root / "cache")


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory, mp40_tiny):
    """An untrained band-gap decoder with the MP-40 subset's statistics, exported like a trained one."""
    from mmcrystal.diffusion import DenoiserConfig, NumAtomsConfig
    from mmcrystal.diffusion.conditioning import ConditionConfig
    from mmcrystal.tasks.diffusion import CrystalDiffusion

    torch.manual_seed(0)
    task = CrystalDiffusion(
        denoiser=DenoiserConfig(hidden_dim=16, num_layers=1, num_freqs=2, time_dim=8, num_heads=2),
        conditions=ConditionConfig(conditions=["properties"], cond_dim=16, properties=["band_gap"]),
        num_atoms=NumAtomsConfig(hidden_dim=16, num_layers=2, max_atoms=12),
        manifest_root=str(mp40_tiny),
    )
    return task.save_pretrained(tmp_path_factory.mktemp("design_decoder") / "pretrained")
