"""Joint diffusion over lattice, fractional coordinates and atom types with ONE time per crystal (as DiffCSP).

`JointDiffusion` is the glue a training step and the sampler share; it holds no loop. A training step:

    diffusion = JointDiffusion(DiffusionConfig(), LatticeNormalization.from_manifest(manifest))
    t = diffusion.sample_time(batch.num_graphs, generator)        # (B,)
    noisy, targets = diffusion.corrupt(batch, t, generator)       # NoisyCrystal, DiffusionTargets
    out = denoiser(noisy, t, drop_conditions(cond, p, generator)) # DenoiserOutput
    losses = diffusion.loss(out, targets, noisy, t)               # {"loss", "loss_coords", "loss_lattice", "loss_types"}
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mmcrystal.config import register_config
from mmcrystal.diffusion.processes.atom_types import AtomTypeConfig, AtomTypeProcess
from mmcrystal.diffusion.processes.lattice import LatticeConfig, LatticeNormalization, LatticeProcess
from mmcrystal.diffusion.processes.wrapped_normal import WrappedNormalConfig, WrappedNormalProcess
from mmcrystal.diffusion.state import DenoiserOutput, NoisyCrystal

__all__ = ["DiffusionConfig", "DiffusionNoise", "DiffusionTargets", "JointDiffusion"]


@register_config
@dataclass
class DiffusionConfig:
    """The three corruption processes and the weights of their losses.

    Attributes:
        coords: Wrapped-normal process of fractional coordinates.
        lattice: DDPM of the lattice parameters.
        types: Masked diffusion of atom types (`fixed_composition=True` for crystal structure prediction).
        t_min: Smallest training time: t ~ U[t_min, 1] (keeps the 1 / t type weight bounded).
        coord_weight: Weight of the coordinate score-matching loss.
        lattice_weight: Weight of the lattice loss.
        type_weight: Weight of the type loss (DiffCSP's de novo model weights types higher; tune per dataset).
    """

    coords: WrappedNormalConfig = field(default_factory=WrappedNormalConfig)
    lattice: LatticeConfig = field(default_factory=LatticeConfig)
    types: AtomTypeConfig = field(default_factory=AtomTypeConfig)
    t_min: float = 1e-3
    coord_weight: float = 1.0
    lattice_weight: float = 1.0
    type_weight: float = 1.0


@dataclass
class DiffusionTargets:
    """Regression/classification targets of one corrupted batch.

    Attributes:
        coords: `(N, 3)` normalised score of the wrapped normal.
        lattice: `(B, 6)` eps or x_0 (per `LatticeConfig.prediction`).
        types: `(N,)` clean element classes.
    """

    coords: torch.Tensor
    lattice: torch.Tensor
    types: torch.Tensor


@dataclass
class DiffusionNoise:
    """The random draws of `corrupt`, passed explicitly to reproduce or permute a corruption.

    Attributes:
        coords: `(N, 3)` standard normal.
        lattice: `(B, 6)` standard normal.
        types: `(N,)` uniform in [0, 1) (mask where below 1 - alpha(t)).
    """

    coords: torch.Tensor
    lattice: torch.Tensor
    types: torch.Tensor


class JointDiffusion(nn.Module):
    """Corrupt, score and step a whole crystal batch with the three processes.

    Args:
        config: `DiffusionConfig`.
        normalization: Lattice statistics, e.g. `LatticeNormalization.from_manifest(manifest)`.
    """

    def __init__(self, config: DiffusionConfig | None = None, normalization: LatticeNormalization | None = None):
        super().__init__()
        self.config = config or DiffusionConfig()
        self.coords = WrappedNormalProcess(self.config.coords)
        self.lattice = LatticeProcess(self.config.lattice, normalization)
        self.types = AtomTypeProcess(self.config.types)

    def sample_time(self, num: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """One time per crystal `(num,)`, uniform in [t_min, 1]."""
        u = torch.rand(num, generator=generator, device=device)
        return self.config.t_min + (1.0 - self.config.t_min) * u

    def sample_noise(self, batch, generator: torch.Generator | None = None) -> DiffusionNoise:
        """Draw the noise `corrupt` would draw for a `CrystalBatch`-like `batch`."""
        frac = batch.frac_coords
        n, b = frac.shape[0], batch.num_atoms.shape[0]
        return DiffusionNoise(
            coords=torch.randn(n, 3, generator=generator, device=frac.device, dtype=frac.dtype),
            lattice=torch.randn(b, self.lattice.dim, generator=generator, device=frac.device, dtype=frac.dtype),
            types=torch.rand(n, generator=generator, device=frac.device),
        )

    def corrupt(
        self,
        batch,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: DiffusionNoise | None = None,
    ) -> tuple[NoisyCrystal, DiffusionTargets]:
        """Corrupt a clean `CrystalBatch` (or anything with its five fields) to times `t (B,)`."""
        noise = noise or self.sample_noise(batch, generator)
        t_atoms = t[batch.batch]  # (N,)
        frac_t, coord_target = self.coords.corrupt(batch.frac_coords, t_atoms, noise=noise.coords)
        params0 = self.lattice.params_from_matrix(batch.lattice, batch.num_atoms)
        params_t, lattice_target = self.lattice.corrupt(params0, t, noise=noise.lattice.to(params0.dtype))
        types0 = self.types.to_classes(batch.atomic_numbers)
        types_t, type_target = self.types.corrupt(types0, t_atoms, noise=noise.types)
        noisy = NoisyCrystal(
            types=types_t,
            frac_coords=frac_t,
            lattice_params=params_t,
            lattice=self.lattice.matrix_from_params(params_t, batch.num_atoms),
            num_atoms=batch.num_atoms,
            batch=batch.batch,
        )
        return noisy, DiffusionTargets(coords=coord_target, lattice=lattice_target, types=type_target)

    def loss(
        self, out: DenoiserOutput, targets: DiffusionTargets, noisy: NoisyCrystal, t: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Weighted sum of the three losses, and each one: keys loss, loss_coords, loss_lattice, loss_types."""
        cfg = self.config
        coords = self.coords.loss(out.coords, targets.coords, noisy.batch, noisy.num_crystals)
        lattice = self.lattice.loss(out.lattice, targets.lattice)
        types = self.types.loss(out.types, targets.types, noisy.types, t[noisy.batch])
        total = cfg.coord_weight * coords + cfg.lattice_weight * lattice + cfg.type_weight * types
        return {"loss": total, "loss_coords": coords, "loss_lattice": lattice, "loss_types": types}

    def prior(
        self,
        num_atoms: torch.Tensor,
        generator: torch.Generator | None = None,
        atomic_numbers: torch.Tensor | None = None,
    ) -> NoisyCrystal:
        """The t = 1 state for crystals of `num_atoms (B,)` atoms. Given `atomic_numbers (N,)` are held fixed (the
        absorbing reverse step never changes an unmasked type); with a de novo model an entry 0 means "draw this
        atom's type" (masked), so a batch can mix held and drawn compositions."""
        device = num_atoms.device
        n, b = int(num_atoms.sum()), int(num_atoms.shape[0])
        drawn = self.types.prior_sample(n, device=device)
        if atomic_numbers is not None:
            atomic_numbers = atomic_numbers.to(device)
            if atomic_numbers.numel() and int(atomic_numbers.min()) < 0:
                raise ValueError("atomic numbers must be positive (or 0: drawn)")
            free = atomic_numbers == 0
            if bool(free.any()) and self.types.config.fixed_composition:
                raise ValueError("fixed_composition=True needs the atomic numbers of every atom (got Z = 0)")
            types = torch.where(free, drawn, self.types.to_classes(atomic_numbers.clamp(min=1)))
        elif self.types.config.fixed_composition:
            raise ValueError("fixed_composition=True needs the atomic numbers of every crystal")
        else:
            types = drawn
        frac = self.coords.prior_sample(n, generator, device=device)
        params = self.lattice.prior_sample(b, generator, device=device)
        return NoisyCrystal(
            types=types,
            frac_coords=frac,
            lattice_params=params,
            lattice=self.lattice.matrix_from_params(params, num_atoms),
            num_atoms=num_atoms,
            batch=torch.repeat_interleave(torch.arange(b, device=device), num_atoms),
        )

    def step(
        self,
        noisy: NoisyCrystal,
        out: DenoiserOutput,
        t: torch.Tensor,
        s: torch.Tensor,
        generator: torch.Generator | None = None,
        coord_eta: float = 1.0,
        lattice_eta: float = 1.0,
    ) -> NoisyCrystal:
        """One reverse step of all three variables from times `t (B,)` to `s (B,)`."""
        t_atoms, s_atoms = t[noisy.batch], s[noisy.batch]
        frac = self.coords.step(noisy.frac_coords, out.coords, t_atoms, s_atoms, generator, coord_eta)
        params = self.lattice.step(noisy.lattice_params, out.lattice, t, s, generator, lattice_eta)
        types = self.types.step(noisy.types, out.types, t_atoms, s_atoms, generator)
        lattice = self.lattice.matrix_from_params(params, noisy.num_atoms)
        return noisy.replace(frac_coords=frac, lattice_params=params, lattice=lattice, types=types)

    def correct(
        self,
        noisy: NoisyCrystal,
        out: DenoiserOutput,
        t: torch.Tensor,
        step_lr: float,
        generator: torch.Generator | None = None,
    ) -> NoisyCrystal:
        """Langevin corrector on the coordinates only (DiffCSP's predictor-corrector)."""
        frac = self.coords.correct(noisy.frac_coords, out.coords, t[noisy.batch], step_lr, generator)
        return noisy.replace(frac_coords=frac)

    def finalize(self, noisy: NoisyCrystal, out: DenoiserOutput, t: torch.Tensor, denoise: bool) -> NoisyCrystal:
        """After the last step: Tweedie-denoise the coordinates (optional) and unmask any leftover type."""
        frac = self.coords.denoise(noisy.frac_coords, out.coords, t[noisy.batch]) if denoise else noisy.frac_coords
        return noisy.replace(frac_coords=frac, types=self.types.finalize(noisy.types, out.types))
