"""Backbone sources: CHGNet features, legacy export folders, refusing what is not an alignment source."""

from __future__ import annotations

import json

import numpy as np
import pytest

from encoders import CHGNetConfig
from mmcrystal.finetune.backbone import build_property_model, read_alignment_source
from mmcrystal.finetune.config import BackboneConfig, HeadConfig, TuningConfig
from mmcrystal.finetune.predictor import PropertyPredictor


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_chgnet_features_as_backbone(mode, mp20_structures):
    model = build_property_model(BackboneConfig(source="chgnet"), ["band_gap"], HeadConfig(hidden_dims=[8]),
                                 TuningConfig(mode=mode))  # fmt: skip
    assert model.config.crystal == CHGNetConfig(freeze=mode == "frozen")
    chgnet_trainable = any(p.requires_grad for p in model.encoders["crystal"].parameters())
    assert chgnet_trainable == (mode == "full")
    model.set_normalization({"band_gap": {"mean": 1.0, "std": 1.0}})
    mean, _ = PropertyPredictor([model]).predict(mp20_structures[:2])
    assert mean.shape == (2, 1) and np.isfinite(mean).all()


def test_legacy_export_config_format_is_read(aligned_export, tmp_path):
    """Exports written before configs moved to class_path/init_args used {"__type__": ...}: still readable."""
    meta = json.loads((aligned_export / "config.json").read_text())

    def legacy(node):
        if isinstance(node, dict) and "class_path" in node:
            return {
                "__type__": node["class_path"].rsplit(".", 1)[1],
                **{k: legacy(v) for k, v in node["init_args"].items()},
            }
        if isinstance(node, dict):
            return {k: legacy(v) for k, v in node.items()}
        return [legacy(v) for v in node] if isinstance(node, list) else node

    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**meta, "config": legacy(meta["config"])}))
    (folder / "model.safetensors").write_bytes((aligned_export / "model.safetensors").read_bytes())
    (folder / "text_backbone").symlink_to(aligned_export / "text_backbone")
    config, fusion, state = read_alignment_source(folder)
    assert (
        config.crystal.hidden_dim == 16 and fusion is None and "model.encoders.crystal.atom_embedding.weight" in state
    )
    assert config.text.model_name == str(folder.resolve() / "text_backbone") and config.text.local_files_only
    model = build_property_model(BackboneConfig(source=str(folder), inputs=["text"]), ["band_gap"])
    assert "text" in model.encoders and model.fusion is not None


def test_sources_that_are_not_alignment_models_are_refused(tmp_path, make_model):
    with pytest.raises(FileNotFoundError, match="not 'scratch'"):
        read_alignment_source(tmp_path / "missing")
    PropertyPredictor([make_model()]).save_pretrained(tmp_path / "finetuned")
    with pytest.raises(ValueError, match="PropertyModel"):
        read_alignment_source(tmp_path / "finetuned")
