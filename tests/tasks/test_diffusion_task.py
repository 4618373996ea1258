"""CrystalDiffusion: fast_dev_run, overfit one batch, checkpoint and pretrained round trips, condition encoder,
EMA, dataset statistics taken at setup."""

from __future__ import annotations

import copy
import shutil

import lightning as L
import pytest
import torch

from encoders import CSPNetConfig, SpectrumConfig, TextConfig
from mmcrystal.data.datamodule import CrystalDataModule, load_manifest
from mmcrystal.diffusion import DenoiserConfig, NumAtomsConfig, drop_conditions
from mmcrystal.diffusion.conditioning import ConditionConfig, ConditionEncoder, ConditionInputs
from mmcrystal.diffusion.ema import EMA
from mmcrystal.formulas import formula_word
from mmcrystal.generate import CrystalGenerator, normalization_from_manifest
from mmcrystal.tasks.base import OptimConfig
from mmcrystal.tasks.diffusion import LOSS_KEYS, CrystalDiffusion, _without_padding

TEXT = TextConfig(model_name="tiny-random")


def tiny_task(conditions=("text",), hidden: int = 32, lr: float = 3e-3, **kwargs) -> CrystalDiffusion:
    return CrystalDiffusion(
        denoiser=DenoiserConfig(hidden_dim=hidden, num_layers=2, num_freqs=4, time_dim=16, num_heads=2),
        conditions=ConditionConfig(
            conditions=list(conditions), cond_dim=32, text=TEXT, properties=["band_gap", "energy_above_hull"]
        ),  # fmt: skip
        num_atoms=kwargs.pop("num_atoms", NumAtomsConfig(hidden_dim=32, num_layers=2, max_atoms=32)),
        optim=OptimConfig(lr=lr, warmup_steps=2, weight_decay=0.0),
        **kwargs,
    )


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=str(tmp_path))  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


def _first_batch(root, split: str = "val", batch_size: int = 8):
    dm = CrystalDataModule(root=str(root), batch_size=batch_size)
    dm.setup()
    loader = dm.val_dataloader() if split == "val" else dm.train_dataloader()
    return next(iter(loader))


def _losses(task, batch, seed: int, use_ema: bool) -> dict[str, float]:
    task.eval()
    with torch.no_grad():
        out = task.compute_losses(batch, torch.Generator().manual_seed(seed), use_ema=use_ema)
    return {k: float(v) for k, v in out.items()}


def test_fast_dev_run_every_condition_and_statistics_from_the_datamodule(tmp_path, mp40_tiny):
    task = tiny_task(conditions=("text", "properties", "composition", "spacegroup"))
    assert task.hparams["normalization"] is None
    trainer = _trainer(tmp_path, fast_dev_run=2)
    trainer.fit(task, datamodule=CrystalDataModule(root=str(mp40_tiny), batch_size=8))
    for split in ("train", "val"):
        for key in LOSS_KEYS:
            value = trainer.callback_metrics[f"{split}/{key}"]
            assert torch.isfinite(value), (split, key)
    expected = normalization_from_manifest(load_manifest(str(mp40_tiny)))
    assert task.hparams["normalization"] == expected  # taken at setup, stored for the checkpoint
    assert int(task.ema.num_updates) == 2
    frozen = [n for n, p in task.named_parameters() if not p.requires_grad]
    assert any(n.startswith("model.conditions.text_encoder.") for n in frozen)
    assert any(n.startswith("ema.module.") for n in frozen)


def test_overfits_one_batch(tmp_path, mp40_tiny):
    """Stated factors after 200 steps on one batch, at fixed seeds: total loss at least 2x lower, type loss 2x,
    atom-count CE 3x (measured: 2.6x, 3.4x, 4.5x). The coordinate score loss hardly moves this early (it needs
    atom positions to a fraction of sigma_min = 0.005), so the total cannot fall much further in a short test."""
    torch.manual_seed(0)
    task = tiny_task(hidden=64, lr=1e-2, ema_decay=0.9, manifest_root=str(mp40_tiny))
    batch = _first_batch(mp40_tiny, "train")
    first = [_losses(task, batch, seed, use_ema=False) for seed in range(3)]
    _trainer(tmp_path, max_steps=200, overfit_batches=1, num_sanity_val_steps=0, limit_val_batches=0,
             enable_checkpointing=False).fit(task, datamodule=CrystalDataModule(root=str(mp40_tiny), batch_size=8))  # fmt: skip
    last = [_losses(task, batch, seed, use_ema=False) for seed in range(3)]
    mean = {k: sum(d[k] for d in last) / 3 / (sum(d[k] for d in first) / 3) for k in first[0]}
    assert mean["loss"] < 1 / 2, mean
    assert mean["loss_types"] < 1 / 2, mean
    assert mean["loss_num_atoms"] < 1 / 3, mean


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mp40_tiny):
    """A tiny text + properties decoder after 3 optimiser steps, and its trainer."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("diffusion_run")
    task = tiny_task(conditions=("text", "properties"), ema_decay=0.5)
    trainer = _trainer(root, max_steps=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=CrystalDataModule(root=str(mp40_tiny), batch_size=8))
    return task, trainer, root


def test_checkpoint_reload_gives_identical_losses(trained, mp40_tiny):
    task, trainer, root = trained
    path = root / "last.ckpt"
    trainer.save_checkpoint(path)
    reloaded = CrystalDiffusion.load_from_checkpoint(path)  # weights_only=True: plain-dict hyperparameters
    assert reloaded.hparams["normalization"] == task.hparams["normalization"]
    assert int(reloaded.ema.num_updates) == 3
    batch = _first_batch(mp40_tiny)
    for use_ema in (False, True):
        assert _losses(task, batch, 7, use_ema) == _losses(reloaded, batch, 7, use_ema)
    # the EMA differs from the online weights after training (decay 0.5)
    assert _losses(task, batch, 7, True) != _losses(task, batch, 7, False)


def test_save_pretrained_then_generator_gives_identical_samples(trained, tmp_path, monkeypatch):
    task, _, _ = trained
    folder = task.save_pretrained(tmp_path / "decoder")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = CrystalGenerator.from_pretrained(folder)
    in_memory = copy.deepcopy(task.model)
    in_memory.denoiser.load_state_dict(task.ema.module.state_dict())  # export holds the EMA weights
    request = dict(prompt="a cubic oxide", properties={"band_gap": 1.0}, n=3, steps=3, seed=2, batch_size=2)
    a, b = loaded.sample(**request), CrystalGenerator(in_memory).sample(**request)
    assert [s.composition for s in a] == [s.composition for s in b]
    for x, y in zip(a, b, strict=True):
        assert x.lattice.matrix.tolist() == y.lattice.matrix.tolist()
        assert x.frac_coords.tolist() == y.frac_coords.tolist()
    assert (folder / "text_backbone" / "tokenizer_config.json").exists()


def test_condition_encoder_masks_missing_conditions_per_sample(mp40_tiny):
    norm = normalization_from_manifest(load_manifest(str(mp40_tiny)))
    cfg = ConditionConfig(conditions=["text", "properties", "composition", "spacegroup"], cond_dim=16, text=TEXT,
                          properties=["band_gap", "no_such_property"], drop_prob={"text": 0.5})  # fmt: skip
    norm["properties"]["no_such_property"] = {"mean": 0.0, "std": 1.0}
    encoder = ConditionEncoder(cfg, norm["properties"])
    batch = _first_batch(mp40_tiny)
    batch.caption_mask[0], batch.captions[0] = False, ""
    batch.spacegroup[1] = 0
    band_gap = batch.property_names.index("band_gap")
    batch.property_mask[2, band_gap] = False
    cond = encoder(ConditionInputs.from_batch(batch, cfg.properties))
    assert cond.names == ("text", "properties", "composition", "spacegroup")
    assert cond.tokens.shape[-1] == 16
    present = cond.present()
    assert not present[0, 0] and bool(present[1:, 0].all())  # caption missing in sample 0 only
    assert not present[1, 3] and bool(present[0, 3])  # space group 0 = unknown
    props = cond.mask[:, cond.group_mask("properties")]  # (B, 2): one token per property
    assert props.shape[1] == 2 and not props[:, 1].any() and not props[2, 0]  # unknown column: never present
    elements = cond.mask[:, cond.group_mask("composition")].sum(1)
    crystal = batch.crystal
    distinct = [len(set(crystal.atomic_numbers[crystal.batch == i].tolist())) for i in range(len(batch))]
    assert elements.tolist() == distinct  # one token per element
    assert cfg.drop_probs() == {"text": 0.5, "properties": 0.1, "composition": 0.1, "spacegroup": 0.1}
    dropped = drop_conditions(cond, cfg.drop_probs(), torch.Generator().manual_seed(0))
    assert (dropped.mask <= cond.mask).all()
    assert not any(p.requires_grad for p in encoder.text_encoder.parameters())
    encoder.train()
    assert not encoder.text_encoder.training  # frozen encoders stay in eval mode


def test_aligned_encoders_are_used_frozen_and_exported_self_contained(tmp_path, mp40_tiny, monkeypatch):
    from mmcrystal.model import AlignmentModelConfig, MultimodalCrystalModel
    from mmcrystal.pretrained import save_pretrained

    xrd = SpectrumConfig(num_bins=64, stem_channels=(8,), stem_strides=(4,), hidden_dim=16, num_layers=1, num_heads=2)
    aligned_cfg = AlignmentModelConfig(modalities=["crystal", "text", "xrd"], latent_dim=8, projection_hidden=0,
                                       crystal=CSPNetConfig(hidden_dim=8, num_layers=1), text=TEXT, xrd=xrd)  # fmt: skip
    aligned = MultimodalCrystalModel(aligned_cfg)
    save_pretrained(aligned, aligned_cfg, tmp_path / "aligned", "MultimodalCrystalModel")
    task = CrystalDiffusion(
        denoiser=DenoiserConfig(hidden_dim=16, num_layers=1, num_freqs=2, time_dim=8, num_heads=2),
        conditions=ConditionConfig(conditions=["text", "xrd"], cond_dim=16, aligned_model=str(tmp_path / "aligned")),
        num_atoms=NumAtomsConfig(hidden_dim=16, num_layers=2, max_atoms=32),
        manifest_root=str(mp40_tiny),
    )
    encoder = task.model.conditions
    for name in ("text", "xrd"):
        mine = getattr(encoder, f"{name}_encoder").state_dict()
        for key, value in aligned.encoders[name].state_dict().items():
            torch.testing.assert_close(mine[key], value)
    assert not any(p.requires_grad for p in encoder.xrd_encoder.parameters())
    inputs = ConditionInputs(batch_size=2, captions=["a", ""], caption_mask=torch.tensor([True, False]),
                             xrd=torch.rand(2, 64), xrd_mask=torch.tensor([False, True]))  # fmt: skip
    with torch.no_grad():
        cond = encoder(inputs)
    assert cond.present().tolist() == [[True, False], [False, True]]
    folder = task.save_pretrained(tmp_path / "decoder")
    shutil.rmtree(tmp_path / "aligned")  # the export must not need the aligned folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    generator = CrystalGenerator.from_pretrained(folder)
    assert generator.model.config.conditions.aligned_model is None
    with torch.no_grad():
        torch.testing.assert_close(generator.model.condition(inputs).tokens, cond.tokens)


def test_statistics_are_required(tmp_path, mp40_tiny):
    task = tiny_task()
    batch = _first_batch(mp40_tiny)
    with pytest.raises(RuntimeError, match="statistics"):
        task.compute_losses(batch)
    dm = CrystalDataModule(shards=[f"val={next(mp40_tiny.glob('*val*.tar'))}"], batch_size=8)
    with pytest.raises(ValueError, match="statistics"):
        _trainer(tmp_path, fast_dev_run=1).fit(task, datamodule=dm)


def test_unconditional_decoder_trains_its_atom_count_head_on_nothing(mp40_tiny):
    task = tiny_task(conditions=(), manifest_root=str(mp40_tiny))
    assert task.model.conditions.names == () and task.drop_probs == {}
    losses = _losses(task, _first_batch(mp40_tiny), 0, use_ema=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses


def test_validation_drops_padding_samples(mp40_tiny):
    batch = _first_batch(mp40_tiny)
    batch.is_padding[-2:] = True
    kept = _without_padding(batch)
    assert len(kept) == len(batch) - 2 and kept.ids == batch.ids[:-2]
    assert kept.crystal.num_atoms.tolist() == batch.crystal.num_atoms[:-2].tolist()
    assert kept.crystal.atomic_numbers.numel() == int(kept.crystal.num_atoms.sum())


def test_ema_warmup_update_and_optimizer_exclusion():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, decay=0.99)
    assert ema.current_decay() == pytest.approx(2 / 11)  # warm-up: min(0.99, (1 + n) / (10 + n)), n = 1
    before = ema.module.weight.clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    torch.testing.assert_close(ema.module.weight, before + (1 - 2 / 11) * 1.0)
    assert int(ema.num_updates) == 1 and not ema.module.weight.requires_grad
    ema.train()
    assert not ema.module.training
    other = torch.nn.Linear(2, 2)
    ema.copy_to(other)
    torch.testing.assert_close(other.weight, ema.module.weight)


def test_composition_model_trains_with_the_decoder_and_is_exported(tmp_path, mp40_tiny):
    from mmcrystal.diffusion.composition_model import CompositionModelConfig

    torch.manual_seed(0)
    composition = CompositionModelConfig(enabled=True, hidden_dim=16, num_layers=1, num_heads=2)
    task = tiny_task(composition=composition, composition_weight=0.5)
    assert task.model.composition.config.max_atoms == 32  # synchronised with the atom-count head
    before = {n: p.detach().clone() for n, p in task.model.composition.named_parameters()}
    trainer = _trainer(tmp_path, fast_dev_run=2)
    trainer.fit(task, datamodule=CrystalDataModule(root=str(mp40_tiny), batch_size=8))
    for split in ("train", "val"):
        assert torch.isfinite(trainer.callback_metrics[f"{split}/loss_composition"])
    assert float(trainer.callback_metrics["train/composition_skipped"]) == 0.0  # MP-40 formulas fit the vocabulary
    moved = [n for n, p in task.model.composition.named_parameters() if not torch.equal(p, before[n])]
    assert "output.weight" in moved
    batch = _first_batch(mp40_tiny)
    losses = _losses(task, batch, 3, use_ema=True)
    parts = sum(losses[k] for k in ("loss_coords", "loss_lattice", "loss_types")) + losses["loss_num_atoms"]
    assert losses["loss"] == pytest.approx(parts + 0.5 * losses["loss_composition"], rel=1e-5)
    loaded = CrystalGenerator.from_pretrained(task.save_pretrained(tmp_path / "decoder"))
    state = loaded.model.composition.state_dict()
    assert all(torch.equal(state[n], p) for n, p in task.model.composition.state_dict().items())


def test_init_from_warm_starts_a_grown_decoder_with_a_new_head(trained, tmp_path, mp40_tiny):
    """init_from: same tensors copied (EMA denoiser of the source), grown tables copied on their overlap, the new
    composition model fresh; applied when fit starts at step 0 only; a checkpoint of it loads without the source."""
    from mmcrystal.diffusion.composition_model import CompositionModelConfig
    from mmcrystal.tasks.warm_start import copy_matching, decoder_state

    source, trainer, root = trained
    folder = source.save_pretrained(tmp_path / "source")
    trainer.save_checkpoint(root / "warm.ckpt")
    composition = CompositionModelConfig(enabled=True, hidden_dim=16, num_layers=1, num_heads=2)
    grown = tiny_task(conditions=("text", "properties"), composition=composition, init_from=str(folder),
                      num_atoms=NumAtomsConfig(hidden_dim=32, num_layers=2, max_atoms=40))  # fmt: skip
    fresh_composition = {n: p.detach().clone() for n, p in grown.model.composition.named_parameters()}
    grown.on_fit_start()  # no trainer: step 0
    ema_source = source.ema.module.state_dict()
    for name, value in grown.model.denoiser.state_dict().items():
        assert torch.equal(value, ema_source[name]), name
    assert all(torch.equal(grown.ema.module.state_dict()[n], v) for n, v in ema_source.items())
    head_new, head_old = grown.model.num_atoms.mlp[-1], source.model.num_atoms.mlp[-1]
    assert head_new.weight.shape[0] == 40 and head_old.weight.shape[0] == 32
    assert torch.equal(head_new.weight[:32], head_old.weight) and torch.equal(head_new.bias[:32], head_old.bias)
    assert all(torch.equal(p, fresh_composition[n]) for n, p in grown.model.composition.named_parameters())
    report = copy_matching(grown.model, decoder_state(root / "warm.ckpt"))  # a checkpoint works as a source too
    assert any(n.startswith("num_atoms.") for n in report.resized)
    assert any(n.startswith("composition.") for n in report.fresh) and not report.unused
    # training from it runs, and its checkpoint loads after the source folder is gone
    trainer2 = _trainer(tmp_path, max_steps=1, limit_val_batches=0, num_sanity_val_steps=0)
    trainer2.fit(grown, datamodule=CrystalDataModule(root=str(mp40_tiny), batch_size=8))
    trainer2.save_checkpoint(tmp_path / "grown.ckpt")
    shutil.rmtree(folder)
    reloaded = CrystalDiffusion.load_from_checkpoint(tmp_path / "grown.ckpt")
    assert reloaded.hparams["init_from"] == str(folder)
    assert torch.equal(reloaded.model.num_atoms.mlp[-1].weight, grown.model.num_atoms.mlp[-1].weight)


def test_init_from_refuses_a_source_that_does_not_fit(tmp_path):
    with pytest.raises(FileNotFoundError, match="init_from"):
        tiny_task(init_from=str(tmp_path / "missing")).on_fit_start()
    from safetensors.torch import save_file

    (tmp_path / "other").mkdir()
    save_file({"something.else": torch.zeros(2)}, str(tmp_path / "other" / "model.safetensors"))
    with pytest.raises(ValueError, match="no tensor matches"):
        tiny_task(init_from=str(tmp_path / "other")).on_fit_start()


def test_train_only_composition_retrains_it_from_scratch_on_a_frozen_decoder(tmp_path, mp40_tiny):
    """init_exclude=[composition] leaves the composition model fresh; train_only=[composition] then changes it alone:
    the exported denoiser, condition encoder and atom-count head are the source's, bit for bit."""
    from mmcrystal.diffusion.composition_model import CompositionModelConfig

    composition = CompositionModelConfig(enabled=True, hidden_dim=16, num_layers=1, num_heads=2, copy=True)
    torch.manual_seed(0)
    source = tiny_task(composition=composition, manifest_root=str(mp40_tiny))
    folder = source.save_pretrained(tmp_path / "source")
    torch.manual_seed(1)
    task = tiny_task(composition=composition, init_from=str(folder), init_exclude=["composition"],
                     train_only=["composition"])  # fmt: skip
    fresh = {n: p.detach().clone() for n, p in task.model.composition.named_parameters()}
    task.on_fit_start()
    assert all(torch.equal(p, fresh[n]) for n, p in task.model.composition.named_parameters())
    before = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    assert {n for n, p in task.model.named_parameters() if p.requires_grad} == {f"composition.{n}" for n in fresh}
    trainer = _trainer(tmp_path, max_steps=3, limit_val_batches=1, val_check_interval=3, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=CrystalDataModule(root=str(mp40_tiny), batch_size=8))
    assert "train/loss_coords" not in trainer.callback_metrics
    assert torch.isfinite(trainer.callback_metrics["val/loss_composition"])
    changed = {n for n, p in task.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("composition.") for n in changed)
    exported = CrystalGenerator.from_pretrained(task.save_pretrained(tmp_path / "retrained")).model.state_dict()
    original = CrystalGenerator.from_pretrained(folder).model.state_dict()
    for name, value in original.items():
        if not name.startswith("composition."):
            assert torch.equal(exported[name], value), name


def test_train_only_and_init_exclude_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="unknown decoder parts"):
        tiny_task(init_exclude=["decoder"])
    with pytest.raises(ValueError, match="supported is"):
        tiny_task(train_only=["denoiser"])
    with pytest.raises(ValueError, match="composition.enabled"):
        tiny_task(train_only=["composition"])


def _fit_composition_only(tmp_path, data_root, composition, **rates):
    """Three steps of the composition-only stage on `data_root` with the caption cache on; (task, trainer)."""
    torch.manual_seed(0)
    task = tiny_task(composition=composition, manifest_root=str(data_root), train_only=["composition"], **rates)
    task.model.conditions.config.text_cache = 1000
    trainer = _trainer(tmp_path, max_steps=3, limit_val_batches=1, val_check_interval=3, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=CrystalDataModule(root=str(data_root), batch_size=8))
    return task, trainer


def test_composition_augment_trains_on_rewritten_captions_and_never_caches_them(tmp_path, mp40_tiny, monkeypatch):
    from mmcrystal.diffusion import formula_augmentation
    from mmcrystal.diffusion.composition_model import CompositionModelConfig

    composition = CompositionModelConfig(enabled=True, hidden_dim=16, num_layers=1, num_heads=2, copy=True)
    with pytest.raises(ValueError, match="train_only"):
        tiny_task(composition=composition, composition_augment=0.3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_task(composition=composition, train_only=["composition"], composition_augment=1.5)
    rewritten: list[str] = []
    original = formula_augmentation.rewrite_formulas

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        rewritten.extend(c for c, r in zip(out.captions, out.rewritten.tolist(), strict=True) if r)
        return out

    monkeypatch.setattr(formula_augmentation, "rewrite_formulas", recording)
    task, trainer = _fit_composition_only(tmp_path, mp40_tiny, composition, composition_augment=0.5)
    assert trainer.callback_metrics["train/composition_rewritten"] == len(rewritten) > 0
    cache = task.model.conditions._text_states
    assert cache and not set(rewritten) & set(cache)


def test_composition_augment_needs_the_copy_pointer():
    from mmcrystal.diffusion.composition_model import CompositionModelConfig

    plain = CompositionModelConfig(enabled=True, hidden_dim=16, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="copy"):
        tiny_task(composition=plain, train_only=["composition"], composition_augment=0.3)


def test_composition_describe_trains_the_generator_on_described_captions(tmp_path, mp40_tiny, monkeypatch):
    from mmcrystal.diffusion import composition_model, formula_words
    from mmcrystal.diffusion.composition_model import CompositionModelConfig

    composition = CompositionModelConfig(enabled=True, hidden_dim=16, num_layers=1, num_heads=2, copy=True)
    with pytest.raises(ValueError, match="train_only"):
        tiny_task(composition=composition, composition_describe=0.3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_task(composition=composition, train_only=["composition"], composition_describe=-0.1)
    described: list[str] = []
    copy_only_rows: list[int] = []
    original = formula_words.describe_formulas
    original_loss = composition_model.CompositionModel.loss

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        described.extend(c for c, d in zip(out.captions, out.described.tolist(), strict=True) if d)
        return out

    def loss(self, reduced, cond, copy_only=None):
        copy_only_rows.append(0 if copy_only is None else int(copy_only.sum()))
        return original_loss(self, reduced, cond, copy_only)

    monkeypatch.setattr(formula_words, "describe_formulas", recording)
    monkeypatch.setattr(composition_model.CompositionModel, "loss", loss)
    # no copy pointer needed: described rows train the generator
    plain = CompositionModelConfig(enabled=True, hidden_dim=16, num_layers=1, num_heads=2)
    task, trainer = _fit_composition_only(tmp_path, mp40_tiny, plain, composition_describe=0.6)
    assert trainer.callback_metrics["train/composition_described"] == len(described) > 0
    assert "train/composition_describe_skipped" in trainer.callback_metrics  # captions naming no formula, counted
    assert all(formula_word(c) is None for c in described)
    assert copy_only_rows and not any(copy_only_rows)  # no row was limited to the copy pointer
    cache = task.model.conditions._text_states
    assert cache and not set(described) & set(cache)
