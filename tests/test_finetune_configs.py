"""Every fine-tuning recipe (configs/finetune/*.yaml, configs/tiny/finetune.yaml) parses and builds its task and data
module through `mmcrystal finetune`; the tiny recipe trains end to end and exports a folder PropertyPredictor loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoders import CSPNetConfig, TextConfig
from mmcrystal.train import STAGES, run_stage

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted((CONFIGS / "finetune").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """Stands in for runs/align_cpu/.../pretrained (absent on CI): a tiny crystal-text alignment export."""
    from mmcrystal.model import AlignmentModelConfig
    from mmcrystal.tasks.alignment import AlignmentPretraining

    network = AlignmentModelConfig(modalities=["crystal", "text"], latent_dim=16, projection_hidden=0,
                                   crystal=CSPNetConfig(hidden_dim=16, num_layers=2, num_freqs=2),
                                   text=TextConfig(model_name="tiny-random"))  # fmt: skip
    return AlignmentPretraining(network=network).save_pretrained(tmp_path_factory.mktemp("export") / "aligned")


def test_there_are_finetune_recipes():
    names = {p.name for p in RECIPES}
    assert names >= {"mp20_formation_energy.yaml", "mp20_band_gap.yaml", "perov5_heat_of_formation.yaml",
                     "jarvis_supercon_tc.yaml", "mp20_multitarget_xrd.yaml"}  # fmt: skip
    assert "finetune" in STAGES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_builds(recipe, tmp_path, tiny_export):
    cli = run_stage("finetune", ["-c", str(recipe), "-c", str(CONFIGS / "trainer" / "cpu.yaml"),
                                 "--model.backbone.source", str(tiny_export),
                                 "--trainer.default_root_dir", str(tmp_path)], run=False)  # fmt: skip
    assert cli.datamodule.hparams.batch_size > 0
    model = cli.model.model
    assert model.config.source == str(tiny_export) and model.config.targets
    expected = {"mp20_formation_energy.yaml": ["formation_energy_per_atom"], "mp20_band_gap.yaml": ["band_gap"],
                "perov5_heat_of_formation.yaml": ["heat_ref"], "jarvis_supercon_tc.yaml": ["minus_tc_K"],
                "mp20_multitarget_xrd.yaml": ["formation_energy_per_atom", "band_gap", "band_gap>0"]}  # fmt: skip
    assert model.config.target_keys == expected[recipe.name]
    if recipe.name == "mp20_multitarget_xrd.yaml":
        assert model.fusion is not None and "xrd" in model.encoders and "xrd" in cli.datamodule.hparams.fields


def test_tiny_recipe_trains_and_exports_a_predictor(tmp_path, mp40_tiny, mp20_structures):
    from mmcrystal.cli import main
    from mmcrystal.finetune.predictor import PropertyPredictor

    main(["finetune", "fit", "-c", str(CONFIGS / "tiny" / "finetune.yaml"), "--data.root", str(mp40_tiny),
          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    exported = next(tmp_path.rglob("pretrained/config.json")).parent
    predictor = PropertyPredictor.from_pretrained(exported, mc_samples=4)
    mean, std = predictor.predict(mp20_structures[:3])
    assert mean.shape == (3, 3) and (std[:, 0] > 0).all()
    assert predictor.property_names == ["band_gap", "band_gap>0", "energy_above_hull"]
    assert next(tmp_path.rglob("checkpoints/last.ckpt")).exists()
