"""Conditional crystal diffusion decoder: joint diffusion over lattice, fractional coordinates and atom types.

- `processes/`: one corruption process per variable (`WrappedNormalProcess`, `LatticeProcess`, `AtomTypeProcess`);
- `joint.JointDiffusion`: corrupt / loss / step of a whole batch with one time per crystal;
- `denoiser.CrystalDenoiser`: the network only (CSPNet-like, FiLM + cross-attention conditioning);
- `guidance`: classifier-free guidance (per-condition dropout, per-condition scales);
- `sampler.CrystalSampler`: the only reverse loop;
- `num_atoms.NumAtomsPredictor`: atom count from the condition, or the histogram prior.
"""

from mmcrystal.diffusion.condition import Condition
from mmcrystal.diffusion.denoiser import CrystalDenoiser, DenoiserConfig
from mmcrystal.diffusion.guidance import GuidanceConfig, drop_conditions, guided_denoise
from mmcrystal.diffusion.joint import DiffusionConfig, DiffusionNoise, DiffusionTargets, JointDiffusion
from mmcrystal.diffusion.num_atoms import NumAtomsConfig, NumAtomsPredictor, histogram_prior, sample_num_atoms
from mmcrystal.diffusion.processes import (
    AtomTypeConfig,
    AtomTypeProcess,
    LatticeConfig,
    LatticeNormalization,
    LatticeProcess,
    WrappedNormalConfig,
    WrappedNormalProcess,
)
from mmcrystal.diffusion.sampler import CrystalSampler, SampleBatch, SamplerConfig
from mmcrystal.diffusion.state import DenoiserOutput, NoisyCrystal

__all__ = [
    "AtomTypeConfig",
    "AtomTypeProcess",
    "Condition",
    "CrystalDenoiser",
    "CrystalSampler",
    "DenoiserConfig",
    "DenoiserOutput",
    "DiffusionConfig",
    "DiffusionNoise",
    "DiffusionTargets",
    "GuidanceConfig",
    "JointDiffusion",
    "LatticeConfig",
    "LatticeNormalization",
    "LatticeProcess",
    "NoisyCrystal",
    "NumAtomsConfig",
    "NumAtomsPredictor",
    "SampleBatch",
    "SamplerConfig",
    "WrappedNormalConfig",
    "WrappedNormalProcess",
    "drop_conditions",
    "guided_denoise",
    "histogram_prior",
    "sample_num_atoms",
]
