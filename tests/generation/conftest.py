"""Fixtures of the generation tests: tiny decoders built in code (never trained runs from runs/)."""

from __future__ import annotations

import pytest
import torch

from encoders import TextConfig, xrd_config
from mmcrystal.data.datamodule import load_manifest
from mmcrystal.diffusion import DenoiserConfig, NumAtomsConfig
from mmcrystal.diffusion.conditioning import ConditionConfig
from mmcrystal.generate import CrystalDiffusionModel, DiffusionModelConfig, normalization_from_manifest

TINY_DENOISER = DenoiserConfig(hidden_dim=16, num_layers=1, num_freqs=2, time_dim=8, num_heads=2)
TINY_HEAD = NumAtomsConfig(hidden_dim=16, num_layers=2, max_atoms=24)
# the 2θ grid the XRD-conditioned test model "was trained on" (recorded in its normalisation, as from a manifest)
XRD_GRID = {"wavelength": "CuKa", "two_theta_min": 10.0, "two_theta_max": 80.0, "n_bins": 256, "normalization": "max"}


@pytest.fixture(scope="session")
def xrd_grid_settings() -> dict:
    """`XRD_GRID`: the XRD settings recorded in `xrd_model`'s normalisation."""
    return dict(XRD_GRID)


@pytest.fixture(scope="session")
def tiny_parts() -> tuple[DenoiserConfig, NumAtomsConfig]:
    """The tiny denoiser and atom-count head configs of these fixtures (max_atoms 24)."""
    return TINY_DENOISER, TINY_HEAD


@pytest.fixture(scope="session")
def normalization(mp40_tiny) -> dict:
    """Dataset statistics of the tiny MP-40 shards."""
    return normalization_from_manifest(load_manifest(str(mp40_tiny)))


@pytest.fixture(scope="session")
def text_decoder(tmp_path_factory, normalization):
    """An untrained text + band-gap decoder saved as a pretrained folder (what `mmcrystal sample` loads)."""
    from mmcrystal.pretrained import save_pretrained

    torch.manual_seed(0)
    conditions = ConditionConfig(conditions=["text", "properties"], cond_dim=16, properties=["band_gap"],
                                 text=TextConfig(model_name="tiny-random"))  # fmt: skip
    config = DiffusionModelConfig(denoiser=TINY_DENOISER, conditions=conditions, num_atoms=TINY_HEAD,
                                  normalization=normalization)  # fmt: skip
    model = CrystalDiffusionModel(config)
    folder = tmp_path_factory.mktemp("text_decoder") / "pretrained"
    return save_pretrained(model, model.export_config(), folder, "CrystalDiffusionModel")


@pytest.fixture(scope="session")
def xrd_model(normalization) -> CrystalDiffusionModel:
    """An untrained decoder conditioned on XRD and space group, whose XRD grid is `XRD_GRID`."""
    torch.manual_seed(0)
    xrd = xrd_config(256, stem_channels=(8, 16), hidden_dim=16, num_layers=1, num_heads=2)
    conditions = ConditionConfig(conditions=["xrd", "spacegroup"], cond_dim=16, xrd=xrd)
    config = DiffusionModelConfig(denoiser=TINY_DENOISER, conditions=conditions, num_atoms=TINY_HEAD,
                                  normalization={**normalization, "xrd": XRD_GRID})  # fmt: skip
    return CrystalDiffusionModel(config).eval()
