"""Corruption processes of the joint crystal diffusion, one per variable: fractional coordinates (wrapped normal on
the torus), lattice (DDPM on normalised log lengths and angles) and atom types (absorbing-state discrete diffusion).

Each process offers `sample_time`, `prior_sample`, `corrupt`, `loss` and `step`; `mmcrystal.diffusion.joint`
combines them with one time per crystal.
"""

from mmcrystal.diffusion.processes.atom_types import AtomTypeConfig, AtomTypeProcess
from mmcrystal.diffusion.processes.lattice import LatticeConfig, LatticeNormalization, LatticeProcess
from mmcrystal.diffusion.processes.wrapped_normal import WrappedNormalConfig, WrappedNormalProcess, wrap01

__all__ = [
    "AtomTypeConfig",
    "AtomTypeProcess",
    "LatticeConfig",
    "LatticeNormalization",
    "LatticeProcess",
    "WrappedNormalConfig",
    "WrappedNormalProcess",
    "wrap01",
]
