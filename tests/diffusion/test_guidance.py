"""Classifier-free guidance: per-condition dropout and the guidance formulas."""

from __future__ import annotations

import pytest
import torch

from mmcrystal.diffusion import (
    Condition,
    CrystalDenoiser,
    DenoiserConfig,
    DenoiserOutput,
    GuidanceConfig,
    JointDiffusion,
    drop_conditions,
    guided_denoise,
)

TOL = dict(rtol=1e-9, atol=1e-10)


def _condition(batch_size: int, gen: torch.Generator, dtype=torch.float64) -> Condition:
    parts = {
        "text": (
            torch.randn(batch_size, 3, 8, generator=gen, dtype=dtype),
            torch.ones(batch_size, 3, dtype=torch.bool),
        ),
        "properties": (torch.randn(batch_size, 1, 8, generator=gen, dtype=dtype), torch.ones(batch_size, 1).bool()),
        "xrd": (torch.randn(batch_size, 2, 8, generator=gen, dtype=dtype), torch.ones(batch_size, 2, dtype=torch.bool)),
    }
    return Condition.from_parts(parts)


@pytest.fixture(scope="module")
def setup(perov_structures, to_batch):
    torch.manual_seed(0)
    denoiser = CrystalDenoiser(DenoiserConfig(hidden_dim=32, num_layers=2, num_freqs=4, time_dim=16, cond_dim=8))
    denoiser = denoiser.double().eval()
    diffusion = JointDiffusion().double()
    gen = torch.Generator().manual_seed(1)
    batch = to_batch(perov_structures[:4], dtype=torch.float64)
    t = diffusion.sample_time(4, gen).double()
    noisy, _ = diffusion.corrupt(batch, t, gen)
    return denoiser, noisy, t, _condition(4, gen)


def _close(a: DenoiserOutput, b: DenoiserOutput) -> None:
    """Same coordinates, lattice and type log-probabilities (logits are defined up to a constant)."""
    torch.testing.assert_close(a.coords, b.coords, **TOL)
    torch.testing.assert_close(a.lattice, b.lattice, **TOL)
    torch.testing.assert_close(torch.log_softmax(a.types, -1), torch.log_softmax(b.types, -1), **TOL)


def test_drop_conditions_drops_each_condition_independently():
    gen = torch.Generator().manual_seed(2)
    cond = _condition(20_000, gen, dtype=torch.float32)
    dropped = drop_conditions(cond, {"text": 0.1, "properties": 0.5}, generator=gen)
    present = dropped.present().float()  # (B, C)
    rates = 1.0 - present.mean(0)
    torch.testing.assert_close(rates, torch.tensor([0.1, 0.5, 0.0]), atol=0.015, rtol=0)
    # independence: P(text and properties both dropped) = 0.1 * 0.5
    both = ((1 - present[:, 0]) * (1 - present[:, 1])).mean()
    assert abs(float(both) - 0.05) < 0.01
    # a condition's tokens are dropped together
    text_mask = dropped.mask[:, dropped.group_mask("text")]
    assert bool((text_mask.all(1) | ~text_mask.any(1)).all())
    assert drop_conditions(None, 0.5) is None
    with pytest.raises(ValueError, match="unknown"):
        drop_conditions(cond, {"image": 0.1})


def test_scale_zero_is_the_unconditional_model(setup):
    denoiser, noisy, t, cond = setup
    with torch.no_grad():
        uncond = denoiser(noisy, t, None)
        for config in (GuidanceConfig(scale=0.0), GuidanceConfig(mode="per_condition", scales={"text": 0.0})):
            _close(guided_denoise(denoiser, noisy, t, cond, config), uncond)


def test_joint_scale_one_is_the_conditional_model(setup):
    denoiser, noisy, t, cond = setup
    with torch.no_grad():
        _close(guided_denoise(denoiser, noisy, t, cond, GuidanceConfig(scale=1.0)), denoiser(noisy, t, cond))
        only_xrd = GuidanceConfig(mode="per_condition", scales={"xrd": 1.0})
        _close(guided_denoise(denoiser, noisy, t, cond, only_xrd), denoiser(noisy, t, cond.only(["xrd"])))


def test_guidance_formulas_with_stacked_variants(setup):
    """Joint: u + w (c - u); per condition: u + sum_c w_c (c_only - u); types on log-probabilities."""
    denoiser, noisy, t, cond = setup
    with torch.no_grad():
        u = denoiser(noisy, t, cond.empty())
        full = denoiser(noisy, t, cond)
        text, xrd = denoiser(noisy, t, cond.only(["text"])), denoiser(noisy, t, cond.only(["xrd"]))
        joint = guided_denoise(denoiser, noisy, t, cond, GuidanceConfig(scale=2.5))
        per = guided_denoise(
            denoiser, noisy, t, cond, GuidanceConfig(mode="per_condition", scales={"text": 2.0, "xrd": -0.5})
        )

    def log_p(out):
        return torch.log_softmax(out.types, -1)

    torch.testing.assert_close(joint.coords, u.coords + 2.5 * (full.coords - u.coords), **TOL)
    torch.testing.assert_close(joint.lattice, u.lattice + 2.5 * (full.lattice - u.lattice), **TOL)
    expected_types = log_p(u) + 2.5 * (log_p(full) - log_p(u))
    torch.testing.assert_close(torch.log_softmax(joint.types, -1), torch.log_softmax(expected_types, -1), **TOL)
    expected = u.coords + 2.0 * (text.coords - u.coords) - 0.5 * (xrd.coords - u.coords)
    torch.testing.assert_close(per.coords, expected, **TOL)
    expected_lattice = u.lattice + 2.0 * (text.lattice - u.lattice) - 0.5 * (xrd.lattice - u.lattice)
    torch.testing.assert_close(per.lattice, expected_lattice, **TOL)


def test_missing_condition_contributes_nothing(setup):
    """A sample without condition c gets only_c = u, so scaling c leaves it unconditional."""
    denoiser, noisy, t, cond = setup
    absent = cond.with_mask(~(cond.group_mask("xrd").unsqueeze(0) & (torch.arange(4) == 1).unsqueeze(1)))
    with torch.no_grad():
        u = denoiser(noisy, t, None)
        out = guided_denoise(denoiser, noisy, t, absent, GuidanceConfig(mode="per_condition", scales={"xrd": 3.0}))
    rows = noisy.batch == 1
    torch.testing.assert_close(out.coords[rows], u.coords[rows], **TOL)
    torch.testing.assert_close(out.lattice[1], u.lattice[1], **TOL)


def test_conditions_never_dropped_stay_in_every_term(setup):
    """`always` (drop probability 0 in training, e.g. CSP's composition): u is the model given only those."""
    denoiser, noisy, t, cond = setup
    with torch.no_grad():
        base = denoiser(noisy, t, cond.only(["xrd"]))
        full = denoiser(noisy, t, cond)
        text_xrd = denoiser(noisy, t, cond.only(["text", "xrd"]))
        zero = guided_denoise(denoiser, noisy, t, cond, GuidanceConfig(scale=0.0, always=["xrd"]))
        joint = guided_denoise(denoiser, noisy, t, cond, GuidanceConfig(scale=2.0, always=["xrd"]))
        per = GuidanceConfig(mode="per_condition", scales={"text": 3.0}, always=["xrd"])
        per_out = guided_denoise(denoiser, noisy, t, cond, per)
    _close(zero, base)
    torch.testing.assert_close(joint.coords, base.coords + 2.0 * (full.coords - base.coords), **TOL)
    torch.testing.assert_close(per_out.coords, base.coords + 3.0 * (text_xrd.coords - base.coords), **TOL)
    torch.testing.assert_close(per_out.lattice, base.lattice + 3.0 * (text_xrd.lattice - base.lattice), **TOL)
    with pytest.raises(ValueError, match="cannot be guided"):
        guided_denoise(
            denoiser, noisy, t, cond, GuidanceConfig(mode="per_condition", scales={"xrd": 1.0}, always=["xrd"])
        )
    with pytest.raises(ValueError, match="unknown"):
        guided_denoise(denoiser, noisy, t, cond, GuidanceConfig(always=["image"]))


class _BatchSizes(torch.nn.Module):
    """Records the number of crystals of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, noisy, t, cond=None):
        self.sizes.append(noisy.num_crystals)
        return self.inner(noisy, t, cond)


def test_terms_that_vanish_for_every_sample_are_not_computed(setup):
    denoiser, noisy, t, cond = setup
    spy = _BatchSizes(denoiser)
    no_xrd = cond.with_mask(~cond.group_mask("xrd").unsqueeze(0).expand_as(cond.mask))  # xrd absent everywhere
    with torch.no_grad():
        both = guided_denoise(spy, noisy, t, no_xrd, GuidanceConfig(mode="per_condition", scales={"text": 2, "xrd": 5}))
        only_text = guided_denoise(denoiser, noisy, t, no_xrd, GuidanceConfig(mode="per_condition", scales={"text": 2}))
        guided_denoise(spy, noisy, t, cond, GuidanceConfig(scale=4.0, always=list(cond.names)))
    assert spy.sizes == [2 * 4, 4]  # u + text (xrd's term is zero); joint over 'always' only: one pass of u
    _close(both, only_text)
