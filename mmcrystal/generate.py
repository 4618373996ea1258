"""Generate crystals with a trained conditional decoder: `CrystalGenerator` and the `mmcrystal sample` command.

    from mmcrystal.generate import CrystalGenerator
    generator = CrystalGenerator.from_pretrained("runs/diffuse/pretrained")
    structures = generator.sample(prompt="a cubic perovskite oxide", n=16, steps=50, guidance=2.0)

The code lives in the `mmcrystal.generation` package (model, conditions, generator, writer, distributed, command);
this module keeps the import path that the CLI (`mmcrystal.generate:sample`), scripts and the `config.json` of
earlier pretrained folders (`mmcrystal.generate.DiffusionModelConfig`) use.
"""

from mmcrystal.generation import (
    CrystalDiffusionModel,
    CrystalGenerator,
    DiffusionModelConfig,
    RankInfo,
    SampleConditions,
    SampleWriter,
    batch_seed,
    formula_in_prompt,
    merge_shards,
    model_fingerprint,
    normalization_from_manifest,
    rank_info,
    resolve_conditions,
    sample,
    sample_seed,
    write_samples,
)

__all__ = [
    "CrystalDiffusionModel",
    "CrystalGenerator",
    "DiffusionModelConfig",
    "RankInfo",
    "SampleConditions",
    "SampleWriter",
    "batch_seed",
    "formula_in_prompt",
    "merge_shards",
    "model_fingerprint",
    "normalization_from_manifest",
    "rank_info",
    "resolve_conditions",
    "sample",
    "sample_seed",
    "write_samples",
]
