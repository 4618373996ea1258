"""Freezing modes, block depths, layer-wise learning-rate decay and LoRA of a PropertyModel."""

from __future__ import annotations

import builtins
import importlib.util

import pytest
import torch

from encoders import CSPNetConfig, build_encoder
from mmcrystal.finetune.config import TuningConfig
from mmcrystal.finetune.tuning import backbone_depths, param_groups, tower_depths

HAS_PEFT = importlib.util.find_spec("peft") is not None


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_tower_depths_of_cspnet():
    encoder = build_encoder(CSPNetConfig(hidden_dim=8, num_layers=3, num_freqs=2))
    depths, layers = tower_depths(encoder)
    assert layers == 3
    assert depths["atom_embedding.weight"] == 0
    assert {depths[f"layers.{i}.receiver_proj.weight"] for i in range(3)} == {1, 2, 3}
    assert depths["final_norm.weight"] == 3  # the final norm trains and decays with the last layer


def test_frozen_mode_leaves_only_the_head_trainable_and_the_backbone_in_eval(make_model):
    model = make_model(tuning=TuningConfig(mode="frozen"))
    assert _trainable(model) and all(n.startswith("head.") for n in _trainable(model))
    model.train()
    assert not model.encoders["crystal"].training and model.head.training


def test_partial_mode_trains_the_last_blocks(make_model):
    model = make_model(tuning=TuningConfig(mode="partial", trainable_blocks=1))
    trainable = _trainable(model)
    assert any(n.startswith("encoders.crystal.layers.1.") for n in trainable)
    assert not any(n.startswith(("encoders.crystal.layers.0.", "encoders.crystal.atom_embedding")) for n in trainable)
    assert "encoders.crystal.final_norm.weight" in trainable
    everything = make_model(tuning=TuningConfig(mode="partial", trainable_blocks=5))
    assert _trainable(everything) == {n for n, _ in everything.named_parameters()}


def test_layer_wise_decay_scales_learning_rates_by_depth(make_model):
    decay = 0.5
    model = make_model(tuning=TuningConfig(layer_lr_decay=decay, backbone_lr_scale=0.8))
    depths, top = backbone_depths(model)
    assert top == 2
    groups = param_groups(model, 1e-3, 0.01, model.config.tuning)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    for name, param in model.named_parameters():
        expected = 1.0 if name.startswith("head.") else 0.8 * decay ** (top + 1 - depths[name])
        assert scale_of[id(param)] == pytest.approx(expected), name
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.head.out.bias) in no_decay and id(model.head.out.weight) not in no_decay


@pytest.mark.skipif(not HAS_PEFT, reason="peft (the `lora` extra) is not installed")
def test_lora_trains_only_adapters_starts_as_the_base_model_and_reloads(tmp_path, make_model):
    from mmcrystal.finetune.predictor import PropertyPredictor

    base = make_model(seed=3)
    lora = make_model(seed=3, tuning=TuningConfig(mode="lora", lora_rank=2))
    backbone = {n for n in _trainable(lora) if not n.startswith("head.")}
    assert backbone and all(".lora_" in n for n in backbone)
    crystal = _crystal_batch()
    with torch.no_grad():  # LoRA's B starts at zero: the adapted model computes what the base model did
        torch.testing.assert_close(lora(crystal), base(crystal))
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.add_(0.1)
        adapted = lora(crystal)
    assert not torch.allclose(adapted, base(crystal))
    PropertyPredictor([lora]).save_pretrained(tmp_path / "lora")
    reloaded = PropertyPredictor.from_pretrained(tmp_path / "lora").models[0]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(crystal), adapted)


def test_lora_without_peft_says_how_to_install_it(monkeypatch, make_model):
    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(ImportError, match=r"mmcrystal\[lora\]"):
        make_model(tuning=TuningConfig(mode="lora"))


def test_bad_tuning_values_are_refused():
    with pytest.raises(ValueError, match="mode"):
        TuningConfig(mode="half")
    with pytest.raises(ValueError, match="layer_lr_decay"):
        TuningConfig(layer_lr_decay=1.5)


def _crystal_batch():
    from mmcrystal.data.batch import CrystalBatch

    z = torch.tensor([8, 22, 8, 3, 3])
    return CrystalBatch(z, torch.rand(5, 3), torch.eye(3).expand(2, 3, 3) * 4.0, torch.tensor([3, 2]),
                        torch.tensor([0, 0, 0, 1, 1]))  # fmt: skip
