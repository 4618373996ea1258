"""AlignmentPretraining: fast_dev_run, overfit one batch, save/reload identical embeddings, safe checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from encoders import CSPNetConfig, TextConfig
from mmcrystal.data.datamodule import CrystalDataModule
from mmcrystal.fusion.cross_attention import FusionConfig
from mmcrystal.model import AlignmentModelConfig
from mmcrystal.tasks.alignment import AlignmentPretraining
from mmcrystal.tasks.base import OptimConfig


def tiny_task(fusion: bool = False, lr: float = 3e-3) -> AlignmentPretraining:
    model = AlignmentModelConfig(
        modalities=["crystal", "text"],
        latent_dim=32,
        projection_hidden=64,
        crystal=CSPNetConfig(hidden_dim=32, num_layers=2, num_freqs=4),
        text=TextConfig(model_name="tiny-random"),
    )
    fusion_cfg = FusionConfig(dim=32, num_layers=1, num_heads=2) if fusion else None
    return AlignmentPretraining(network=model, optim=OptimConfig(lr=lr, warmup_steps=1), fusion=fusion_cfg)


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=str(tmp_path))  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


def test_fast_dev_run_with_fusion(tmp_path, mp40_tiny):
    dm = CrystalDataModule(root=str(mp40_tiny), batch_size=8)
    _trainer(tmp_path, fast_dev_run=2).fit(tiny_task(fusion=True), datamodule=dm)


def test_overfits_one_batch(tmp_path, mp40_tiny):
    torch.manual_seed(0)
    task = tiny_task(lr=3e-3)
    dm = CrystalDataModule(root=str(mp40_tiny), batch_size=16)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    first = task.compute_loss(batch)[0].item()
    _trainer(tmp_path, max_steps=80, overfit_batches=1, num_sanity_val_steps=0, limit_val_batches=0).fit(
        task, datamodule=dm
    )
    task.eval()
    with torch.no_grad():
        last = task.compute_loss(batch)[0].item()
    assert last < first / 10, (first, last)


def test_validation_metrics_and_checkpoint_reload(tmp_path, mp40_tiny):
    dm = CrystalDataModule(root=str(mp40_tiny), batch_size=16)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, num_sanity_val_steps=0)
    task = tiny_task()
    trainer.fit(task, datamodule=dm)
    metrics = trainer.callback_metrics
    for key in ("val/recall@1/crystal->text", "val/recall@5/text->crystal", "val/mean_rank/crystal->text",
                "val/zero_shot_crystal_system"):  # fmt: skip
        assert key in metrics, sorted(metrics)
    from mmcrystal.data.datamodule import load_manifest

    assert metrics["val/gallery/crystal->text"] == load_manifest(str(mp40_tiny))["splits"]["val"]["accepted"]
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    reloaded = AlignmentPretraining.load_from_checkpoint(path)  # weights_only=True: no pickled classes
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    task.eval()
    reloaded.eval()
    with torch.no_grad():
        for modality in ("crystal", "text"):
            a = task.model(batch)[modality].embedding
            b = reloaded.model(batch)[modality].embedding
            torch.testing.assert_close(a, b)


def test_save_pretrained_roundtrip_is_self_contained(tmp_path, mp40_tiny, monkeypatch):
    task = tiny_task().eval()
    folder = task.save_pretrained(tmp_path / "aligned")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AlignmentPretraining.load_model(folder)
    dm = CrystalDataModule(root=str(mp40_tiny), batch_size=8)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        for modality in ("crystal", "text"):
            torch.testing.assert_close(task.model(batch)[modality].embedding, model(batch)[modality].embedding)
    assert (folder / "model.safetensors").exists() and (folder / "text_backbone" / "tokenizer_config.json").exists()


def test_missing_modality_gives_no_nan(mp40_tiny):
    task = tiny_task()
    dm = CrystalDataModule(root=str(mp40_tiny), batch_size=8)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    batch.caption_mask[:] = False
    batch.captions = [""] * len(batch)
    loss, _, emb = task.compute_loss(batch)
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert not emb["text"].present.any()
    batch.caption_mask[0] = True  # exactly one pair: still no NaN
    batch.captions[0] = "a cubic crystal"
    loss, _, _ = task.compute_loss(batch)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("pairs", ["crystal_anchored", "all_pairs"])
def test_pairs(pairs):
    model = AlignmentModelConfig(modalities=["crystal", "text", "xrd"], latent_dim=16, projection_hidden=0,
                                 crystal=CSPNetConfig(hidden_dim=16, num_layers=1), text=TextConfig(model_name="tiny-random"))  # fmt: skip
    from mmcrystal.tasks.alignment import AlignmentLossConfig

    task = AlignmentPretraining(network=model, loss=AlignmentLossConfig(pairs=pairs))
    expected = {"crystal_anchored": 2, "all_pairs": 3}[pairs]
    assert len(task.pairs) == expected
