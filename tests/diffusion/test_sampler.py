"""`CrystalSampler`: an oracle denoiser (exact scores of known target crystals) must lead the reverse loop back to
the targets; determinism, mixed sizes, batching with a callback, fixed composition, pymatgen export."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmcrystal.diffusion import (
    AtomTypeConfig,
    Condition,
    CrystalDenoiser,
    CrystalSampler,
    DenoiserConfig,
    DenoiserOutput,
    DiffusionConfig,
    JointDiffusion,
    LatticeNormalization,
    SamplerConfig,
)
from mmcrystal.diffusion.processes.lattice import lengths_angles
from mmcrystal.diffusion.processes.wrapped_normal import (
    center_per_crystal,
    wrapped_normal_log_density,
    wrapped_normal_score,
)


class OracleDenoiser(nn.Module):
    """Returns what a perfect network would for data that is a point mass at `target` (a `CrystalBatch`).

    Coordinates: the wrapped-normal score around the target, normalised as the network's output. With
    `translation_invariant=True` the score is taken around the target shifted by the circular-mean offset of
    x_t (the best global translation) and centred per crystal, like the real (translation-invariant) denoiser;
    samples then match the target up to a global translation.
    """

    def __init__(self, diffusion: JointDiffusion, target, translation_invariant: bool) -> None:
        super().__init__()
        self.diffusion, self.target, self.translation_invariant = diffusion, target, translation_invariant
        self.calls = 0

    def _coords(self, noisy, t_atoms: torch.Tensor) -> torch.Tensor:
        coords = self.diffusion.coords
        displacement = noisy.frac_coords - self.target.frac_coords  # (N, 3)
        if self.translation_invariant:
            displacement = displacement - circular_mean(displacement, noisy.batch, noisy.num_crystals)[noisy.batch]
        score = wrapped_normal_score(displacement, coords.sigma(t_atoms).unsqueeze(-1), coords.config.num_images)
        pred = score / coords.score_norm(t_atoms).sqrt().unsqueeze(-1)
        return center_per_crystal(pred, noisy.batch, noisy.num_crystals) if self.translation_invariant else pred

    def forward(self, noisy, t, cond=None) -> DenoiserOutput:
        self.calls += 1
        lattice = self.diffusion.lattice
        x0 = lattice.params_from_matrix(self.target.lattice)
        abar = lattice.alpha_bar(t).unsqueeze(-1)
        eps = (noisy.lattice_params - abar.sqrt() * x0) / (1 - abar).clamp(min=1e-12).sqrt()
        classes = self.diffusion.types.to_classes(self.target.atomic_numbers)
        logits = torch.full((classes.numel(), self.diffusion.types.num_classes), -1e4).scatter(1, classes[:, None], 0.0)
        return DenoiserOutput(coords=self._coords(noisy, t[noisy.batch]), lattice=eps, types=logits)


def circular_mean(displacement: torch.Tensor, batch: torch.Tensor, num_crystals: int) -> torch.Tensor:
    """Per-crystal circular mean `(B, 3)` of fractional displacements `(N, 3)`."""
    angle = 2 * math.pi * displacement
    sums = torch.zeros(num_crystals, 3, 2, dtype=displacement.dtype)
    sums.index_add_(0, batch, torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1))
    return torch.atan2(sums[..., 1], sums[..., 0]) / (2 * math.pi)


def _normalization(batch) -> LatticeNormalization:
    lengths, angles = lengths_angles(batch.lattice.double())
    log_lengths = torch.log(lengths)
    return LatticeNormalization(
        log_length_mean=tuple(log_lengths.mean(0).tolist()),
        log_length_std=tuple((log_lengths.std(0) + 0.1).tolist()),
        angle_mean=tuple(angles.mean(0).tolist()),
        angle_std=tuple((angles.std(0) + 5.0).tolist()),
    )


def _assert_recovered(samples, target, modulo_translation: bool, coord_tol: float = 2e-3) -> None:
    assert torch.equal(samples.atomic_numbers, target.atomic_numbers)
    assert torch.equal(samples.num_atoms, target.num_atoms)
    assert float(samples.frac_coords.min()) >= 0.0 and float(samples.frac_coords.max()) < 1.0
    got_lengths, got_angles = lengths_angles(samples.lattice.double())
    want_lengths, want_angles = lengths_angles(target.lattice.double())
    torch.testing.assert_close(got_lengths, want_lengths, rtol=1e-3, atol=0)
    torch.testing.assert_close(got_angles, want_angles, rtol=0, atol=0.05)
    diff = samples.frac_coords.double() - target.frac_coords.double()
    if modulo_translation:
        diff = diff - circular_mean(diff, target.batch, target.num_atoms.numel())[target.batch]
    wrapped = diff - torch.round(diff)
    assert float(wrapped.abs().max()) < coord_tol, float(wrapped.abs().max())


@pytest.mark.parametrize("translation_invariant", [False, True])
def test_ancestral_predictor_corrector_recovers_perov5(perov_structures, to_batch, translation_invariant):
    target = to_batch(perov_structures[:6])
    diffusion = JointDiffusion(normalization=_normalization(target))
    oracle = OracleDenoiser(diffusion, target, translation_invariant)
    # no final Tweedie denoise: the loop itself must end within a few sigma_min = 0.005 of the target
    sampler = CrystalSampler(oracle, diffusion, SamplerConfig(num_steps=150, corrector_steps=1, denoise_final=False))
    samples = sampler.sample(target.num_atoms, seed=0)
    _assert_recovered(samples, target, modulo_translation=translation_invariant, coord_tol=0.025)
    assert oracle.calls == 2 * 150 + 1  # corrector + predictor per step, one final denoise


def test_few_step_sampling_recovers_mixed_size_mp20(mp20_structures, to_batch):
    target = to_batch(mp20_structures[:10])  # 10 crystals of different sizes in one batch
    assert target.num_atoms.unique().numel() > 3
    diffusion = JointDiffusion(normalization=_normalization(target))
    oracle = OracleDenoiser(diffusion, target, translation_invariant=True)
    sampler = CrystalSampler(oracle, diffusion, SamplerConfig.few_step(num_steps=30))
    _assert_recovered(sampler.sample(target.num_atoms, seed=3), target, modulo_translation=True)


class MixtureOracle(nn.Module):
    """Exact score of single-atom crystals whose coordinates follow a two-point mixture p = w_a d(a) + w_b d(b)."""

    def __init__(self, diffusion: JointDiffusion, modes: torch.Tensor, weights: torch.Tensor) -> None:
        super().__init__()
        self.diffusion, self.modes, self.log_weights = diffusion, modes, torch.log(weights)

    def forward(self, noisy, t, cond=None) -> DenoiserOutput:
        coords, k = self.diffusion.coords, self.diffusion.coords.config.num_images
        sigma = coords.sigma(t).view(-1, 1, 1)  # (B, 1, 1); one atom per crystal
        displacement = noisy.frac_coords.unsqueeze(1) - self.modes  # (B, 2, 3)
        log_density = wrapped_normal_log_density(displacement, sigma, k).sum(-1) + self.log_weights  # (B, 2)
        posterior = torch.softmax(log_density, dim=-1).unsqueeze(-1)  # p(mode | x_t)
        score = (posterior * wrapped_normal_score(displacement, sigma, k)).sum(1)  # (B, 3)
        b = noisy.num_crystals
        types = torch.zeros(b, self.diffusion.types.num_classes)
        lattice = torch.zeros_like(noisy.lattice_params)  # eps = 0: the lattice is not under test here
        return DenoiserOutput(coords=score / coords.score_norm(t).sqrt().unsqueeze(-1), lattice=lattice, types=types)


def test_reverse_loop_samples_a_mixture_with_its_weights():
    """Not only a point mass: with the exact score of a 0.3 / 0.7 two-point mixture, samples land on both points
    in those proportions (the loop samples the distribution rather than collapsing to one mode)."""
    diffusion = JointDiffusion()
    modes = torch.tensor([[0.1, 0.2, 0.3], [0.6, 0.9, 0.5]])
    oracle = MixtureOracle(diffusion, modes, torch.tensor([0.3, 0.7]))
    sampler = CrystalSampler(oracle, diffusion, SamplerConfig(num_steps=60, corrector_steps=1, denoise_final=False))
    samples = sampler.sample(torch.ones(2000, dtype=torch.long), seed=5)
    distance = samples.frac_coords.unsqueeze(1) - modes  # (2000, 2, 3)
    distance = (distance - torch.round(distance)).abs().amax(-1)  # (2000, 2) largest axis offset from each mode
    nearest = distance.argmin(-1)
    assert float(distance.min(-1).values.max()) < 0.03  # every sample sits on one of the two points
    assert abs(float((nearest == 0).float().mean()) - 0.3) < 0.04  # 4 standard errors at n = 2000


@pytest.mark.slow
def test_full_1000_step_sampling_recovers_mp20(mp20_structures, to_batch):
    target = to_batch(mp20_structures[:16])
    diffusion = JointDiffusion(normalization=_normalization(target))
    oracle = OracleDenoiser(diffusion, target, translation_invariant=True)
    samples = CrystalSampler(oracle, diffusion, SamplerConfig()).sample(target.num_atoms, seed=4)
    _assert_recovered(samples, target, modulo_translation=True)


@pytest.fixture(scope="module")
def tiny_sampler():
    torch.manual_seed(0)
    cfg = DenoiserConfig(hidden_dim=16, num_layers=1, num_freqs=2, time_dim=8, cond_dim=4, num_heads=2)
    config = SamplerConfig.few_step(num_steps=6, batch_size=2)
    return CrystalSampler(CrystalDenoiser(cfg), JointDiffusion(), config)


def test_same_seed_same_samples_with_mixed_sizes_and_batches(tiny_sampler):
    num_atoms = torch.tensor([2, 5, 3])
    cond = Condition.from_parts({"text": (torch.randn(3, 2, 4), torch.tensor([[1, 1], [1, 0], [0, 0]]).bool())})
    seen = []
    first = tiny_sampler.sample(num_atoms, cond=cond, seed=7, callback=lambda s, i: seen.append((i, len(s))))
    second = tiny_sampler.sample(num_atoms, cond=cond, seed=7)
    other = tiny_sampler.sample(num_atoms, cond=cond, seed=8)
    assert seen == [(0, 2), (1, 1)]  # batch_size 2: two batches, streamed in order
    for name in ("lattice", "frac_coords", "atomic_numbers", "num_atoms"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    assert not torch.equal(first.frac_coords, other.frac_coords)
    assert first.frac_coords.shape == (10, 3) and first.lattice.shape == (3, 3, 3)
    assert torch.equal(first.num_atoms, num_atoms)
    assert bool(((first.atomic_numbers >= 1) & (first.atomic_numbers <= 100)).all())
    assert float(first.frac_coords.min()) >= 0.0 and float(first.frac_coords.max()) < 1.0
    assert bool((torch.det(first.lattice) > 0).all())
    assert tiny_sampler.denoiser.training  # the sampler restores the module's mode


def test_fixed_composition_and_structures(tiny_sampler):
    numbers = torch.tensor([8, 8, 22, 56, 8])
    samples = tiny_sampler.sample([2, 3], atomic_numbers=numbers, seed=1)
    assert torch.equal(samples.atomic_numbers, numbers)
    structures = samples.to_structures()
    assert [len(s) for s in structures] == [2, 3]
    assert structures[1].composition.element_composition.get("Ba") == 1.0
    assert structures[0].volume > 0


def test_allowed_types_restrict_every_crystal_to_its_chemical_system(tiny_sampler):
    classes = tiny_sampler.diffusion.types.num_classes
    num_atoms = torch.tensor([4, 6, 5])
    shared = torch.zeros(classes, dtype=torch.bool)
    shared[[7, 21]] = True  # O (Z 8), Ti (Z 22)
    samples = tiny_sampler.sample(num_atoms, seed=3, allowed_types=shared)
    assert set(samples.atomic_numbers.tolist()) <= {8, 22}
    free = tiny_sampler.sample(num_atoms, seed=3)
    assert len(set(free.atomic_numbers.tolist()) - {8, 22}) > 0  # untrained logits: the mask is what restricts
    # one system per crystal: crystal 1 may only hold Li (Z 3)
    per_crystal = shared.unsqueeze(0).repeat(3, 1)
    per_crystal[1] = False
    per_crystal[1, 2] = True
    mixed = tiny_sampler.sample(num_atoms, seed=3, allowed_types=per_crystal)
    types = mixed.atomic_numbers.split(num_atoms.tolist())
    assert set(types[1].tolist()) == {3}
    assert set(types[0].tolist()) <= {8, 22} and set(types[2].tolist()) <= {8, 22}
    # a full mask is the unconstrained sampler, draw for draw
    everything = tiny_sampler.sample(num_atoms, seed=3, allowed_types=torch.ones(classes, dtype=torch.bool))
    assert torch.equal(everything.atomic_numbers, free.atomic_numbers)
    assert torch.equal(everything.frac_coords, free.frac_coords)


def test_allowed_types_errors(tiny_sampler):
    classes = tiny_sampler.diffusion.types.num_classes
    with pytest.raises(ValueError, match="allows no element"):
        tiny_sampler.sample([2], allowed_types=torch.zeros(classes, dtype=torch.bool))
    with pytest.raises(ValueError, match="allowed_types must be"):
        tiny_sampler.sample([2], allowed_types=torch.ones(classes + 1, dtype=torch.bool))


def test_partly_held_types_keep_the_given_atoms_and_draw_the_rest(tiny_sampler):
    num_atoms = torch.tensor([2, 3, 2])
    numbers = torch.tensor([11, 17, 0, 0, 0, 8, 22])  # crystal 0 NaCl held, crystal 1 drawn, crystal 2 TiO held
    classes = tiny_sampler.diffusion.types.num_classes
    allowed = torch.zeros(classes, dtype=torch.bool)
    allowed[[2, 25]] = True  # Li, Fe: acts on the drawn atoms only
    samples = tiny_sampler.sample(num_atoms, atomic_numbers=numbers, seed=4, allowed_types=allowed)
    types = samples.atomic_numbers.split(num_atoms.tolist())
    assert types[0].tolist() == [11, 17] and types[2].tolist() == [8, 22]
    assert set(types[1].tolist()) <= {3, 26}
    # the t = 1 state: held atoms unmasked at their class (Z - 1), drawn atoms masked
    prior = tiny_sampler.diffusion.prior(num_atoms, atomic_numbers=numbers)
    mask = tiny_sampler.diffusion.types.mask_index
    assert prior.types.tolist() == [10, 16, mask, mask, mask, 7, 21]
    with pytest.raises(ValueError, match="positive"):
        tiny_sampler.diffusion.prior(num_atoms, atomic_numbers=-numbers)


def test_csp_diffusion_needs_every_atomic_number():
    diffusion = JointDiffusion(DiffusionConfig(types=AtomTypeConfig(fixed_composition=True)))
    with pytest.raises(ValueError, match="every atom"):
        diffusion.prior(torch.tensor([2]), atomic_numbers=torch.tensor([8, 0]))


def test_templates_hold_crystals_to_their_space_group(tiny_sampler):
    from pymatgen.core import Lattice, Structure

    from mmcrystal.diffusion.symmetry import template_from_structure

    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                       [[0, 0, 0], [0.305, 0.305, 0.0]])  # fmt: skip
    template = template_from_structure(rutile)
    numbers = torch.cat([torch.tensor([8, 8, 22]), torch.as_tensor(template.species)])
    samples = tiny_sampler.sample([3, 6], atomic_numbers=numbers, seed=2, templates=[None, template])
    lattice, frac = samples.lattice[1].double(), samples.frac_coords[3:].double()
    gram = lattice @ lattice.T
    assert torch.allclose(gram[0, 0], gram[1, 1], rtol=1e-5) and abs(float(gram[0, 1])) < 1e-4  # a = b, gamma 90
    for rot, trans in zip(template.rotations, template.translations, strict=True):  # every operation maps atoms
        images = frac @ torch.as_tensor(rot, dtype=torch.float64).T + torch.as_tensor(trans)  # onto atoms
        d = images[:, None] - frac[None]
        assert float((d - d.round()).abs().amax(-1).min(1).values.max()) < 1e-4
    free = samples.lattice[0].double() @ samples.lattice[0].double().T
    assert not torch.allclose(free[0, 0], free[1, 1], rtol=1e-3)  # the untemplated crystal stays free
    with pytest.raises(ValueError, match="templates for"):
        tiny_sampler.sample([3, 6], atomic_numbers=numbers, templates=[template])


def test_template_start_begins_from_the_template_crystal():
    from dataclasses import replace as dc_replace

    from pymatgen.core import Lattice, Structure

    from mmcrystal.diffusion.symmetry import template_from_structure

    torch.manual_seed(0)
    cfg = DenoiserConfig(hidden_dim=16, num_layers=1, num_freqs=2, time_dim=8, cond_dim=4, num_heads=2)
    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                       [[0, 0, 0], [0.305, 0.305, 0.0]])  # fmt: skip
    template = template_from_structure(rutile)
    numbers = torch.cat([torch.tensor([8, 8, 22]), torch.as_tensor(template.species)])
    base = SamplerConfig.few_step(num_steps=20, batch_size=4)
    sampler = CrystalSampler(CrystalDenoiser(cfg), JointDiffusion(), dc_replace(base, template_start=0.02))
    late = sampler.sample([3, 6], atomic_numbers=numbers, seed=3, templates=[None, template])
    # started at t = 0.02 from rutile itself: one or two small steps of an untrained network leave it near rutile
    moved = (late.frac_coords[3:].double() - torch.as_tensor(template.frac_coords) + 0.5) % 1.0 - 0.5
    assert float(moved.abs().max()) < 0.05
    lengths = late.lattice[1].double().norm(dim=-1)
    assert torch.allclose(lengths, torch.as_tensor(template.lattice).norm(dim=-1), rtol=0.15)
    early = CrystalSampler(sampler.denoiser, sampler.diffusion, dc_replace(base, template_start=1.0)).sample(
        [3, 6], atomic_numbers=numbers, seed=3, templates=[None, template]
    )
    assert not torch.allclose(early.frac_coords[3:], late.frac_coords[3:], atol=0.05)  # from noise: elsewhere
    with pytest.raises(ValueError, match="template_start"):
        CrystalSampler(sampler.denoiser, sampler.diffusion, dc_replace(base, template_start=0.0)).sample(
            [6], atomic_numbers=torch.as_tensor(template.species), templates=[template]
        )
