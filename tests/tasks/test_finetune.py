"""PropertyFinetuning: fast_dev_run, overfit one batch, frozen weights stay frozen, masked targets, reload and
predict identically, pretrained weights (and fusion) really come from the alignment export / checkpoint."""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import pytest
import torch

from encoders import CSPNetConfig, TextConfig
from mmcrystal.data.datamodule import CrystalDataModule
from mmcrystal.finetune.config import BackboneConfig, HeadConfig, TargetConfig, TuningConfig
from mmcrystal.finetune.predictor import PropertyPredictor
from mmcrystal.tasks.base import OptimConfig
from mmcrystal.tasks.finetune import PropertyFinetuning

CRYSTAL = CSPNetConfig(hidden_dim=16, num_layers=2, num_freqs=2)
TARGETS = [TargetConfig(name="band_gap"), TargetConfig(name="band_gap", kind="binary", threshold=0.0),
           TargetConfig(name="energy_above_hull", loss="huber")]  # fmt: skip


def tiny_task(tuning: TuningConfig | None = None, backbone: BackboneConfig | None = None, lr=3e-3, dropout=0.0):
    return PropertyFinetuning(
        backbone=backbone or BackboneConfig(source="scratch", crystal=CRYSTAL),
        targets=TARGETS,
        head=HeadConfig(hidden_dims=[16], dropout=dropout),
        tuning=tuning,
        optim=OptimConfig(lr=lr, warmup_steps=1, weight_decay=0.0),
    )


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=str(tmp_path), enable_checkpointing=False)  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


def _batch(root, split="val", batch_size=16):
    dm = CrystalDataModule(root=str(root), batch_size=batch_size, fields=("z", "frac", "lattice"))
    dm.setup()
    return next(iter(dm.val_dataloader() if split == "val" else dm.train_dataloader()))


@pytest.fixture(scope="module")
def aligned_checkpoint(tmp_path_factory, mp40_tiny):
    """A real Lightning checkpoint of a tiny crystal-text alignment with cross-attention fusion."""
    from mmcrystal.fusion.cross_attention import FusionConfig
    from mmcrystal.model import AlignmentModelConfig
    from mmcrystal.tasks.alignment import AlignmentPretraining

    network = AlignmentModelConfig(modalities=["crystal", "text"], latent_dim=16, projection_hidden=0, crystal=CRYSTAL,
                                   text=TextConfig(model_name="tiny-random"))  # fmt: skip
    task = AlignmentPretraining(network=network, fusion=FusionConfig(dim=16, num_layers=1, num_heads=2))
    folder = tmp_path_factory.mktemp("aligned_ckpt")
    trainer = _trainer(folder, max_steps=1, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=CrystalDataModule(root=str(mp40_tiny), batch_size=8))
    trainer.save_checkpoint(folder / "align.ckpt")
    return folder / "align.ckpt", task


def test_fast_dev_run_multitask_with_fused_captions(tmp_path, mp40_tiny, aligned_checkpoint):
    backbone = BackboneConfig(source=str(aligned_checkpoint[0]), inputs=["text"])
    task = tiny_task(backbone=backbone, tuning=TuningConfig(layer_lr_decay=0.8))
    dm = CrystalDataModule(root=str(mp40_tiny), batch_size=8)
    _trainer(tmp_path, fast_dev_run=2).fit(task, datamodule=dm)
    assert task.hparams["normalization"]["band_gap"]["std"] > 0  # train-split statistics adopted at setup


def test_overfits_one_batch(mp40_tiny):
    task = tiny_task()
    task.model.set_normalization(
        {"band_gap": {"mean": 0.0, "std": 1.0}, "energy_above_hull": {"mean": 0.0, "std": 0.1}}
    )
    batch = _batch(mp40_tiny, "train")
    optimizer = torch.optim.Adam(task.parameters(), lr=3e-3)
    task.train()
    first = task.compute_loss(batch)[0].item()
    for _ in range(150):
        loss = task.compute_loss(batch)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    task.eval()
    with torch.no_grad():
        last = task.compute_loss(batch)[0].item()
    assert last < first / 10, (first, last)


@pytest.mark.parametrize("mode", ["frozen", "partial"])
def test_frozen_parameters_really_stay_frozen(tmp_path, mp40_tiny, mode):
    task = tiny_task(tuning=TuningConfig(mode=mode, trainable_blocks=1), dropout=0.2)
    before = copy.deepcopy(task.model.state_dict())
    _trainer(tmp_path, max_steps=5, limit_val_batches=0, num_sanity_val_steps=0).fit(
        task, datamodule=CrystalDataModule(root=str(mp40_tiny), batch_size=8, fields=("z", "frac", "lattice"))
    )
    after = task.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("head.") for k in changed)
    frozen = [k for k in before if k.startswith(("encoders.crystal.atom_embedding", "encoders.crystal.layers.0."))]
    assert frozen and not changed & set(frozen)
    last_block = {k for k in changed if k.startswith("encoders.crystal.layers.1.")}
    assert bool(last_block) == (mode == "partial")
    groups = task.configure_optimizers()["optimizer"].param_groups
    optimised = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) not in optimised for n, p in task.model.named_parameters() if n in frozen)


def test_missing_targets_are_masked_per_task(mp40_tiny):
    task = tiny_task()
    task.model.set_normalization(
        {"band_gap": {"mean": 0.5, "std": 1.0}, "energy_above_hull": {"mean": 0.0, "std": 0.1}}
    )
    batch = _batch(mp40_tiny)
    band_gap = batch.property_names.index("band_gap")
    batch.property_mask[: len(batch) // 2, band_gap] = False
    loss, parts, _ = task.compute_loss(batch)
    batch.properties[: len(batch) // 2, band_gap] = 1e4  # unknown values must not matter
    loss_garbage, parts_garbage, _ = task.compute_loss(batch)
    torch.testing.assert_close(loss, loss_garbage)
    assert parts["band_gap"][1] == len(batch) - len(batch) // 2
    batch.property_mask[:, band_gap] = False
    _, parts_none, _ = task.compute_loss(batch)
    assert "band_gap" not in parts_none and "energy_above_hull" in parts_none


def test_reload_from_checkpoint_and_export_predict_identically(tmp_path, mp40_tiny, mp20_structures):
    task = tiny_task(dropout=0.1)
    dm = CrystalDataModule(root=str(mp40_tiny), batch_size=8, fields=("z", "frac", "lattice"))
    trainer = _trainer(tmp_path, max_steps=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    reloaded = PropertyFinetuning.load_from_checkpoint(tmp_path / "last.ckpt")  # weights_only=True
    batch = _batch(mp40_tiny)
    task.eval()
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.model.forward_batch(batch), reloaded.model.forward_batch(batch))
    predictor = PropertyPredictor.from_pretrained(task.save_pretrained(tmp_path / "export"))
    mean, std = predictor.predict(mp20_structures[:6])
    expected, _ = PropertyPredictor([task.model]).predict(mp20_structures[:6])
    np.testing.assert_array_equal(mean, expected)
    assert not std.any() and predictor.property_names == ["band_gap", "band_gap>0", "energy_above_hull"]


def test_alignment_export_weights_load_and_scratch_keeps_only_the_architecture(tmp_path, aligned_checkpoint):
    from mmcrystal.tasks.alignment import AlignmentPretraining

    ckpt, aligned = aligned_checkpoint
    export = AlignmentPretraining.load_from_checkpoint(ckpt).save_pretrained(tmp_path / "aligned")
    pretrained = tiny_task(backbone=BackboneConfig(source=str(export))).model
    scratch = tiny_task(backbone=BackboneConfig(source=str(export), pretrained=False)).model
    reference = aligned.model.encoders["crystal"].state_dict()
    for key, value in reference.items():
        torch.testing.assert_close(pretrained.encoders["crystal"].state_dict()[key], value)
    assert scratch.config.crystal == pretrained.config.crystal
    assert not torch.equal(scratch.encoders["crystal"].layers[0].receiver_proj.weight,
                           reference["layers.0.receiver_proj.weight"])  # fmt: skip
    assert "text" not in pretrained.encoders  # a crystal-only fine-tune never builds the text model


def test_checkpoint_source_brings_the_fusion_and_captions_change_predictions(aligned_checkpoint, mp40_tiny):
    ckpt, aligned = aligned_checkpoint
    model = tiny_task(backbone=BackboneConfig(source=str(ckpt), inputs=["text"])).model.eval()
    for key, value in aligned.fusion.state_dict().items():
        torch.testing.assert_close(model.fusion.state_dict()[key], value)
    batch = _batch(mp40_tiny)
    assert batch.caption_mask.any()
    with torch.no_grad():
        with_captions = model.forward_batch(batch)
        batch.caption_mask[:] = False
        without = model.forward_batch(batch)
    assert not torch.allclose(with_captions, without)
