"""Every diffusion recipe (configs/diffusion/*.yaml, configs/tiny/diffusion.yaml) parses and builds its task and data
module through `mmcrystal diffuse`; the tiny recipe trains end to end and exports a folder the generator loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmcrystal.train import STAGES, run_stage

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted((CONFIGS / "diffusion").glob("*.yaml"))


def test_there_are_diffusion_recipes():
    assert {p.name for p in RECIPES} >= {"text_mp40.yaml", "csp_perov5.yaml", "property_mp20.yaml"}
    assert "diffuse" in STAGES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_builds(recipe, tmp_path):
    cli = run_stage("diffuse", ["-c", str(recipe), "-c", str(CONFIGS / "trainer" / "cpu.yaml"),
                                "--trainer.default_root_dir", str(tmp_path)], run=False)  # fmt: skip
    assert cli.model is not None and cli.datamodule is not None
    assert cli.datamodule.hparams.batch_size > 0
    model = cli.model.model
    assert model.denoiser.config.cond_dim == model.config.conditions.cond_dim == model.num_atoms.config.cond_dim
    if recipe.name == "csp_perov5.yaml":
        assert model.config.diffusion.types.fixed_composition and model.conditions.names == ("composition",)
    if recipe.name == "property_mp20.yaml":
        assert model.config.conditions.properties == ["band_gap"]


def test_tiny_recipe_builds(tmp_path):
    cli = run_stage("diffuse", ["-c", str(CONFIGS / "tiny" / "diffusion.yaml"), "-c", str(CONFIGS / "trainer" / "cpu.yaml"),
                                "--data.root", str(tmp_path)], run=False)  # fmt: skip
    assert cli.model.model.denoiser.config.hidden_dim == 32
    assert cli.model.model.conditions.names == ("text", "properties")


def test_diffuse_fit_end_to_end_exports_a_generator_folder(tmp_path, mp40_tiny):
    from mmcrystal.cli import main
    from mmcrystal.generate import CrystalGenerator

    main(["diffuse", "fit", "-c", str(CONFIGS / "tiny" / "diffusion.yaml"), "--data.root", str(mp40_tiny),
          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    exported = next(tmp_path.rglob("pretrained/config.json")).parent
    generator = CrystalGenerator.from_pretrained(exported)
    structures = generator.sample(prompt="a cubic crystal", properties={"band_gap": 1.0}, n=2, steps=2)
    assert len(structures) == 2 and all(len(s) >= 1 for s in structures)
    assert next(tmp_path.rglob("checkpoints/last.ckpt")).exists()
