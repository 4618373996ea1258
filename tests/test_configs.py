"""Every YAML recipe in configs/ parses and builds its task and data module; trainer presets name real options."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
import yaml

from mmcrystal.train import STAGES, run_stage

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = {stage: sorted((CONFIGS / stage).glob("*.yaml")) for stage in ("align",)}


@pytest.mark.parametrize("recipe", [p for paths in RECIPES.values() for p in paths], ids=lambda p: p.name)
def test_recipe_builds(recipe, tmp_path):
    stage = recipe.parent.name
    assert stage in STAGES
    cli = run_stage(stage, ["-c", str(recipe), "-c", str(CONFIGS / "trainer" / "cpu.yaml"),
                            "--trainer.default_root_dir", str(tmp_path)], run=False)  # fmt: skip
    assert cli.model is not None and cli.datamodule is not None
    assert cli.datamodule.hparams.batch_size > 0


def test_tiny_recipes_build(tmp_path):
    for recipe in sorted((CONFIGS / "tiny").glob("align*.yaml")):
        cli = run_stage("align", ["-c", str(recipe), "--data.root", str(tmp_path)], run=False)
        assert cli.model.model.config.latent_dim == 32


@pytest.mark.parametrize("preset", sorted((CONFIGS / "trainer").glob("*.yaml")), ids=lambda p: p.name)
def test_trainer_presets_use_real_options(preset):
    options = set(inspect.signature(L.Trainer.__init__).parameters)
    trainer = yaml.safe_load(preset.read_text())["trainer"]
    assert set(trainer) <= options, set(trainer) - options


def test_align_fit_end_to_end_exports_pretrained(tmp_path, mp40_tiny):
    from mmcrystal.cli import main
    from mmcrystal.tasks.alignment import AlignmentPretraining

    main(["align", "fit", "-c", str(CONFIGS / "tiny" / "align.yaml"), "--data.root", str(mp40_tiny),
          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    exported = next(tmp_path.rglob("pretrained/config.json")).parent
    model = AlignmentPretraining.load_model(exported)
    assert model.config.modalities == ["crystal", "text"]
