"""Generating crystals with a trained conditional decoder.

- `model.CrystalDiffusionModel`: condition encoder + denoiser + atom-count head + processes, from one config.
- `conditions`: a user's request (prompt, properties, composition, XRD file, space group, guidance) validated
  against the model; formulas in prompts.
- `generator.CrystalGenerator`: atom counts, condition tokens, batches through `CrystalSampler`.
- `writer.SampleWriter`: streams CIF + extxyz + JSON lines to disk batch by batch, resumable.
- `distributed`: ranks write disjoint shards; rank 0 (or `mmcrystal sample --merge OUT`) merges them.
- `command.sample`: the `mmcrystal sample` command.
`mmcrystal.generate` re-exports the public names (the import path used by the CLI, scripts and older configs).
"""

from mmcrystal.generation.command import sample, write_samples
from mmcrystal.generation.conditions import SampleConditions, formula_in_prompt, resolve_conditions
from mmcrystal.generation.distributed import RankInfo, merge_shards, rank_info
from mmcrystal.generation.generator import CrystalGenerator, batch_seed, sample_seed
from mmcrystal.generation.model import (
    CrystalDiffusionModel,
    DiffusionModelConfig,
    model_fingerprint,
    normalization_from_manifest,
)
from mmcrystal.generation.writer import SampleWriter

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
