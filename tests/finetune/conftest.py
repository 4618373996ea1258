"""Fixtures of the fine-tuning tests: tiny property models and a tiny aligned export to fine-tune from."""

from __future__ import annotations

import pytest

from encoders import CSPNetConfig, TextConfig
from mmcrystal.finetune.backbone import build_property_model
from mmcrystal.finetune.config import BackboneConfig, HeadConfig, TuningConfig

TINY_CRYSTAL = CSPNetConfig(hidden_dim=16, num_layers=2, num_freqs=2)
NORMALIZATION = {"band_gap": {"mean": 1.0, "std": 2.0}, "energy_above_hull": {"mean": 0.05, "std": 0.1}}


def make_model(targets=("band_gap", "band_gap>0", "energy_above_hull"), tuning=None, dropout=0.1, seed=0):
    """A tiny from-scratch property model with fixed normalisation statistics."""
    import torch

    torch.manual_seed(seed)
    model = build_property_model(
        BackboneConfig(source="scratch", crystal=TINY_CRYSTAL),
        list(targets),
        HeadConfig(hidden_dims=[16], dropout=dropout),
        tuning or TuningConfig(),
    )
    model.set_normalization({k: v for k, v in NORMALIZATION.items() if k in {t.split(">")[0] for t in targets}})
    return model.eval()


@pytest.fixture(scope="session", name="make_model")
def make_model_fixture():
    """The `make_model` factory (fixtures are how test modules share helpers here)."""
    return make_model


@pytest.fixture(scope="session")
def aligned_export(tmp_path_factory):
    """A tiny crystal-text alignment export folder (random weights; the route is what is tested)."""
    from mmcrystal.model import AlignmentModelConfig
    from mmcrystal.tasks.alignment import AlignmentPretraining

    network = AlignmentModelConfig(modalities=["crystal", "text"], latent_dim=16, projection_hidden=0,
                                   crystal=TINY_CRYSTAL, text=TextConfig(model_name="tiny-random"))  # fmt: skip
    return AlignmentPretraining(network=network).save_pretrained(tmp_path_factory.mktemp("aligned") / "export")
