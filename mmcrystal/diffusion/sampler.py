"""`CrystalSampler`: the only reverse-diffusion loop of the project (used by the CLI and by validation alike).

Per step from t to s < t on a uniform time grid 1 = t_0 > t_1 > ... > t_K = 0 (one time per crystal, shared by
the three processes, as in training):
  1. `corrector_steps` Langevin corrector steps on the coordinates at t (DiffCSP alg. 1), one network call each;
  2. one predictor step of all variables: VE reverse step for coordinates (eta = 1 ancestral, 0 DDIM-like),
     DDIM/DDPM step for the lattice, masked-diffusion posterior for types;
and after the last step a Tweedie denoise of the coordinates at sigma_min. The grid is continuous in t, so the
few-step setting (`SamplerConfig.few_step`) is the same loop on a coarser grid (tens of steps).

Batches may mix crystal sizes (`num_atoms` per crystal). `allowed_types` restricts de novo atom types to a chemical
system: the network's type logits of every other element are set to -inf before each posterior draw, i.e. the
clean-type distribution p(x_0 | x_t) is renormalised over the allowed elements (exact for the absorbing process,
whose reverse step only ever draws from that distribution; it is a constraint at sampling, not a learned condition). Sampling is deterministic given `seed`: every random draw
comes from one `torch.Generator`, in a fixed order. An optional `callback(samples, batch_index)` is called after
each finished batch so that callers can stream samples to disk.

`templates` (one `SymmetryTemplate` or None per crystal, `mmcrystal.diffusion.symmetry`) hold crystals to a space
group: the state is projected onto its template after the prior draw, after every corrector and predictor step and
after the final denoise (coordinates onto the template's orbits, the cell metric onto the one its operations keep),
with the atom types the caller holds at the template's species. The network sees only symmetric states.
`SamplerConfig.template_start` t0 < 1 starts a templated crystal from its template crystal's own sites and cell noised
to time t0 (SDEdit-style, Meng et al. 2022; template-based CSP relaxes a known skeleton the same way) instead of
from noise: the crystal waits, unchanged, until the loop's time reaches t0, then follows the loop. Why: a denoiser
trained without symmetry, started from projected noise, lets atoms confined to the same low-dimensional sites meet
(identical neighbours get identical updates from a permutation-equivariant network, so they never part again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from encoders.layers.scatter import exclusive_cumsum
from mmcrystal.config import register_config
from mmcrystal.diffusion.condition import Condition
from mmcrystal.diffusion.guidance import GuidanceConfig, guided_denoise
from mmcrystal.diffusion.joint import JointDiffusion
from mmcrystal.diffusion.processes.lattice import lattice_from_lengths_angles
from mmcrystal.diffusion.processes.wrapped_normal import wrap01
from mmcrystal.diffusion.state import NoisyCrystal
from mmcrystal.diffusion.symmetry import SymmetryProjector, SymmetryTemplate

__all__ = ["CrystalSampler", "SampleBatch", "SamplerConfig"]


@register_config
@dataclass
class SamplerConfig:
    """Reverse-diffusion settings.

    Attributes:
        num_steps: Predictor steps on a uniform grid of t from 1 to 0 (DiffCSP: 1,000).
        corrector_steps: Langevin corrector steps on the coordinates before each predictor step (0 disables).
        step_lr: Corrector step size at sigma_min; gamma = step_lr (sigma_t / sigma_min)^2 (DiffCSP: 1e-5).
        coord_eta: Coordinate predictor noise: 1 ancestral (reverse SDE), 0 deterministic (DDIM-like).
        lattice_eta: Lattice step noise: 1 DDPM posterior, 0 DDIM.
        batch_size: Crystals per reverse loop; `callback` is called after each such batch.
        denoise_final: Tweedie-denoise the coordinates after the last step (removes the sigma_min noise).
        guidance: Classifier-free guidance (ignored when sampling without a condition).
        template_start: Time t0 in (0, 1] at which templated crystals start, from their template crystal noised to
            t0 (module docstring); 1 starts them from noise like every other crystal. 0.5 (default): on MP-40
            captions 75 % valid against 55 % from noise, 29 % of samples keeping their template's skeleton
            (BENCHMARKS.md); lower is more valid and less new.
    """

    num_steps: int = 1000
    corrector_steps: int = 1
    step_lr: float = 1e-5
    coord_eta: float = 1.0
    lattice_eta: float = 1.0
    batch_size: int = 256
    denoise_final: bool = True
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    template_start: float = 0.5

    @classmethod
    def few_step(cls, num_steps: int = 50, **overrides) -> SamplerConfig:
        """Tens of steps: the same ancestral loop (DDPM lattice posterior, reverse-SDE coordinates + Langevin) on a
        coarse grid.

        Not deterministic DDIM for the lattice (lattice_eta = 0, the default up to 2026-12): on a CPU-trained MP-20
        decoder at 50 steps, DDIM left 15 % of the cells collapsed (invalid samples at a median 0.14 of the volume
        their composition needs) and structural validity at 84.8 %; the DDPM posterior gives 94.0 % with the same
        weights (BENCHMARKS.md, scripts/diagnose_denovo.py)."""
        return cls(**{"num_steps": num_steps, "lattice_eta": 1.0, "coord_eta": 1.0, **overrides})


@dataclass
class SampleBatch:
    """Generated crystals.

    Attributes:
        lattice: `(B, 3, 3)` rows a, b, c in Å.
        frac_coords: `(N, 3)` in [0, 1).
        atomic_numbers: `(N,)` long.
        num_atoms: `(B,)` long.
    """

    lattice: torch.Tensor
    frac_coords: torch.Tensor
    atomic_numbers: torch.Tensor
    num_atoms: torch.Tensor

    @property
    def batch(self) -> torch.Tensor:
        """`(N,)` crystal index of each atom."""
        return torch.repeat_interleave(
            torch.arange(self.num_atoms.numel(), device=self.num_atoms.device), self.num_atoms
        )

    def __len__(self) -> int:
        return int(self.num_atoms.numel())

    def to_structures(self) -> list:
        """One pymatgen `Structure` per crystal."""
        from pymatgen.core import Lattice, Structure

        lattice = self.lattice.detach().cpu().double().numpy()
        frac = self.frac_coords.detach().cpu().double().numpy()
        numbers = self.atomic_numbers.detach().cpu().tolist()
        counts = self.num_atoms.detach().cpu().tolist()
        structures, start = [], 0
        for i, n in enumerate(counts):
            structures.append(Structure(Lattice(lattice[i]), numbers[start : start + n], frac[start : start + n]))
            start += n
        return structures

    @staticmethod
    def cat(parts: Sequence[SampleBatch]) -> SampleBatch:
        """Concatenate batches in order."""
        return SampleBatch(
            lattice=torch.cat([p.lattice for p in parts]),
            frac_coords=torch.cat([p.frac_coords for p in parts]),
            atomic_numbers=torch.cat([p.atomic_numbers for p in parts]),
            num_atoms=torch.cat([p.num_atoms for p in parts]),
        )


class CrystalSampler:
    """Generate crystals with a trained denoiser.

    Args:
        denoiser: Called as `denoiser(noisy: NoisyCrystal, t (B,), cond: Condition | None)` -> `DenoiserOutput`.
        diffusion: The `JointDiffusion` the denoiser was trained with.
        config: `SamplerConfig`.
    """

    def __init__(self, denoiser: nn.Module, diffusion: JointDiffusion, config: SamplerConfig | None = None) -> None:
        self.denoiser = denoiser
        self.diffusion = diffusion
        self.config = config or SamplerConfig()

    def time_grid(self, device=None) -> torch.Tensor:
        """`(num_steps + 1,)` times from 1 down to 0."""
        return torch.linspace(1.0, 0.0, self.config.num_steps + 1, device=device)

    def _device(self, num_atoms: torch.Tensor) -> torch.device:
        param = next(iter(self.denoiser.parameters()), None)
        return param.device if param is not None else num_atoms.device

    @torch.no_grad()
    def sample(
        self,
        num_atoms: torch.Tensor | Sequence[int],
        cond: Condition | None = None,
        atomic_numbers: torch.Tensor | None = None,
        seed: int = 0,
        callback: Callable[[SampleBatch, int], None] | None = None,
        allowed_types: torch.Tensor | None = None,
        templates: Sequence[SymmetryTemplate | None] | None = None,
    ) -> SampleBatch:
        """Sample one crystal per entry of `num_atoms`, in batches of `config.batch_size`.

        Args:
            num_atoms: `(B,)` atoms of each crystal (mixed sizes are fine).
            cond: Condition tokens of the B crystals, or None (unconditional).
            atomic_numbers: `(sum num_atoms,)` atom types held fixed (crystal structure prediction, or infilling
                with a de novo model, where 0 marks an atom whose type is drawn), or None.
            seed: Seed of the generator; the same seed gives the same samples.
            callback: Called as `callback(samples, batch_index)` after each finished batch.
            allowed_types: `(num_classes,)` or `(B, num_classes)` bool, True at the element classes (Z - 1) a
                crystal may contain; None allows every element.

        Returns:
            All samples, in the order of `num_atoms`.
        """
        num_atoms = torch.as_tensor(num_atoms, dtype=torch.long)
        device = self._device(num_atoms)
        num_atoms = num_atoms.to(device)
        self.diffusion.to(device)  # schedule tables live in buffers
        generator = torch.Generator(device=device).manual_seed(seed)
        atom_start = exclusive_cumsum(num_atoms).tolist() + [int(num_atoms.sum())]
        if atomic_numbers is not None and atomic_numbers.numel() != atom_start[-1]:
            raise ValueError(f"{atomic_numbers.numel()} atomic numbers for {atom_start[-1]} atoms")
        cond = None if cond is None else cond.to(device)
        if allowed_types is not None:
            allowed_types = self._allowed(allowed_types, int(num_atoms.numel()), device)
        if templates is not None and len(templates) != num_atoms.numel():
            raise ValueError(f"{len(templates)} templates for {num_atoms.numel()} crystals")
        was_training = self.denoiser.training
        self.denoiser.eval()
        parts = []
        try:
            size = max(int(self.config.batch_size), 1)
            for index, lo in enumerate(range(0, num_atoms.numel(), size)):
                hi = min(lo + size, num_atoms.numel())
                types = None if atomic_numbers is None else atomic_numbers[atom_start[lo] : atom_start[hi]].to(device)
                chunk_cond = None if cond is None else cond.select(slice(lo, hi))
                allowed = None if allowed_types is None else allowed_types[lo:hi]
                chunk_templates = None if templates is None else templates[lo:hi]
                samples = self.sample_batch(num_atoms[lo:hi], chunk_cond, types, generator, allowed, chunk_templates)
                if callback is not None:
                    callback(samples, index)
                parts.append(samples)
        finally:
            self.denoiser.train(was_training)
        return SampleBatch.cat(parts)

    def _allowed(self, allowed: torch.Tensor, num_crystals: int, device) -> torch.Tensor:
        """`(B, num_classes)` bool from a shared `(num_classes,)` or per-crystal mask, checked."""
        classes = self.diffusion.types.num_classes
        allowed = torch.as_tensor(allowed, dtype=torch.bool, device=device)
        if allowed.dim() == 1:
            allowed = allowed.unsqueeze(0).expand(num_crystals, -1)
        if allowed.shape != (num_crystals, classes):
            raise ValueError(
                f"allowed_types must be ({classes},) or ({num_crystals}, {classes}), got {tuple(allowed.shape)}"
            )
        if not bool(allowed.any(dim=1).all()):
            raise ValueError("allowed_types allows no element for some crystal")
        return allowed

    def _predict(
        self, noisy: NoisyCrystal, t: float | torch.Tensor, cond: Condition | None, allowed: torch.Tensor | None = None
    ):
        t_batch = torch.full((noisy.num_crystals,), float(t), device=noisy.frac_coords.device)
        out = guided_denoise(self.denoiser, noisy, t_batch, cond, self.config.guidance)
        if allowed is not None:  # (B, C) -> (N, C): renormalise p(x_0 | x_t) over the chemical system
            out = replace(out, types=out.types.float().masked_fill(~allowed[noisy.batch], float("-inf")))
        return out, t_batch

    @torch.no_grad()
    def sample_batch(
        self,
        num_atoms: torch.Tensor,
        cond: Condition | None,
        atomic_numbers: torch.Tensor | None,
        generator: torch.Generator,
        allowed_types: torch.Tensor | None = None,
        templates: Sequence[SymmetryTemplate | None] | None = None,
    ) -> SampleBatch:
        """One reverse loop over a batch of crystals (see the module docstring); `allowed_types (B, C)` bool,
        `templates` one per crystal or None."""
        cfg, diffusion = self.config, self.diffusion
        projector = None
        if templates is not None and any(t is not None for t in templates):
            projector = SymmetryProjector(templates, num_atoms.cpu()).to(num_atoms.device)
        project = (lambda state: self.project(state, projector)) if projector is not None else (lambda state: state)
        noisy = project(diffusion.prior(num_atoms, generator, atomic_numbers))
        start = None
        if projector is not None and cfg.template_start < 1.0:
            noisy, start = self._template_start(noisy, templates, generator)
            noisy = project(noisy)
        allowed = allowed_types  # held types are carried over unchanged, the mask only acts on drawn ones
        times = self.time_grid().tolist()
        for t, s in zip(times[:-1], times[1:], strict=True):
            before = noisy
            for _ in range(cfg.corrector_steps):
                out, t_batch = self._predict(noisy, t, cond, allowed)
                noisy = project(diffusion.correct(noisy, out, t_batch, cfg.step_lr, generator))
            out, t_batch = self._predict(noisy, t, cond, allowed)
            s_batch = torch.full_like(t_batch, s)
            noisy = project(diffusion.step(noisy, out, t_batch, s_batch, generator, cfg.coord_eta, cfg.lattice_eta))
            if start is not None:  # crystals whose start time is not reached yet stay as they were
                noisy = _keep_waiting(noisy, before, start < t - 1e-9)
        out, t_batch = self._predict(noisy, times[-1], cond, allowed)
        noisy = project(diffusion.finalize(noisy, out, t_batch, denoise=cfg.denoise_final))
        return SampleBatch(
            lattice=noisy.lattice,
            frac_coords=wrap01(noisy.frac_coords),
            atomic_numbers=diffusion.types.to_atomic_numbers(noisy.types),
            num_atoms=num_atoms,
        )

    def _template_start(
        self, noisy: NoisyCrystal, templates: Sequence[SymmetryTemplate | None], generator: torch.Generator
    ) -> tuple[NoisyCrystal, torch.Tensor]:
        """Templated crystals replaced by their template crystal (sites and cell) noised to `template_start`, and
        the `(B,)` start time of every crystal (1 for the others)."""
        t0 = float(self.config.template_start)
        if not 0.0 < t0 <= 1.0:
            raise ValueError(f"template_start must lie in (0, 1], got {t0}")
        device, dtype = noisy.frac_coords.device, noisy.frac_coords.dtype
        chosen = [b for b, t in enumerate(templates) if t is not None]
        start = torch.ones(noisy.num_crystals, device=device)
        start[chosen] = t0
        offsets = exclusive_cumsum(noisy.num_atoms).tolist()
        atoms = torch.cat([torch.arange(offsets[b], offsets[b] + templates[b].num_atoms) for b in chosen]).to(device)
        x0 = torch.cat([torch.as_tensor(templates[b].frac_coords, dtype=dtype) for b in chosen]).to(device)
        frac, _ = self.diffusion.coords.corrupt(x0, torch.full((len(x0),), t0, device=device), generator)
        cells = torch.stack([torch.as_tensor(templates[b].lattice, dtype=dtype) for b in chosen]).to(device)
        index = torch.tensor(chosen, device=device)
        p0 = self.diffusion.lattice.params_from_matrix(cells, noisy.num_atoms[index])
        params, _ = self.diffusion.lattice.corrupt(p0, torch.full((len(chosen),), t0, device=device), generator)
        all_frac, all_params = noisy.frac_coords.clone(), noisy.lattice_params.clone()
        all_frac[atoms] = frac.to(dtype)
        all_params[index] = params.to(all_params.dtype)
        lattice = self.diffusion.lattice.matrix_from_params(all_params, noisy.num_atoms)
        return noisy.replace(frac_coords=all_frac, lattice_params=all_params, lattice=lattice), start

    def project(self, noisy: NoisyCrystal, projector: SymmetryProjector) -> NoisyCrystal:
        """The state with every templated crystal's cell metric and orbits symmetrised (module docstring)."""
        lengths, angles = projector.project_metric(noisy.lattice)
        templated = projector.templated
        lattice = torch.where(templated.view(-1, 1, 1), lattice_from_lengths_angles(lengths, angles), noisy.lattice)
        params = self.diffusion.lattice.params_from_matrix(lattice, noisy.num_atoms)
        params = torch.where(templated.view(-1, 1), params.to(noisy.lattice_params), noisy.lattice_params)
        frac = projector.project_coords(noisy.frac_coords, lattice)
        return noisy.replace(frac_coords=frac, lattice=lattice, lattice_params=params)


def _keep_waiting(new: NoisyCrystal, old: NoisyCrystal, waiting: torch.Tensor) -> NoisyCrystal:
    """`new`, except that crystals with `waiting (B,)` True keep their `old` state."""
    atoms = waiting[new.batch]
    return new.replace(
        frac_coords=torch.where(atoms.unsqueeze(-1), old.frac_coords, new.frac_coords),
        lattice_params=torch.where(waiting.unsqueeze(-1), old.lattice_params, new.lattice_params),
        lattice=torch.where(waiting.view(-1, 1, 1), old.lattice, new.lattice),
        types=torch.where(atoms, old.types, new.types),
    )
