"""CrystalGenerator: the atom-count rule (user > composition > head, restricted to multiples of a formula named in
the prompt), per-sample count seeds, XRD + space-group conditioned sampling, per-condition guidance honoured."""

from __future__ import annotations

import pytest
import torch

from mmcrystal.generate import CrystalGenerator, resolve_conditions


@pytest.fixture()
def generator(text_decoder) -> CrystalGenerator:
    return CrystalGenerator.from_pretrained(text_decoder)


def _flat_head(generator: CrystalGenerator, peak: int | None = None) -> None:
    """Make the atom-count head uniform over 1..max_atoms, or certain of `peak` atoms, for any condition."""
    last = generator.model.num_atoms.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        if peak is not None:
            last.bias.fill_(-30.0)
            last.bias[peak - 1] = 30.0


def _counts(generator, n=24, seed=0, **request):
    conditions = generator.resolve(**request)
    return generator.atom_counts(conditions, generator.encode(conditions), range(n), seed).tolist()


def test_a_formula_in_the_prompt_makes_counts_multiples_of_it(generator):
    _flat_head(generator)
    assert generator.max_atoms == generator.model.max_atoms == 24
    lifepo4 = _counts(generator, prompt="LiFePO4 in an orthorhombic cell")
    assert set(lifepo4) <= {7, 14, 21} and len(set(lifepo4)) > 1  # multiples of 7 within max_atoms, several drawn
    nacl = _counts(generator, prompt="a rock-salt NaCl crystal")
    assert all(c % 2 == 0 for c in nacl) and len(set(nacl)) > 3
    free = _counts(generator, prompt="a cubic perovskite oxide")
    assert any(c % 2 for c in free)  # no formula: the head alone (uniform here)
    _flat_head(generator, peak=14)
    assert set(_counts(generator, prompt="LiFePO4 in an orthorhombic cell")) == {14}  # the head picks the multiple
    # the user's count wins over the prompt's formula
    structures = generator.sample(prompt="LiFePO4 in an orthorhombic cell", n=2, steps=1, num_atoms=[3, 5])
    assert [len(s) for s in structures] == [3, 5]
    with pytest.raises(ValueError, match="max_atoms"):
        _counts(generator, prompt="a huge Li30Fe cell")  # 31 atoms per formula unit > 24


def test_atom_counts_follow_the_global_sample_index_not_the_batch(generator):
    _flat_head(generator)
    whole = _counts(generator, n=10, seed=4, prompt="a layered sulfide")
    conditions = generator.resolve(prompt="a layered sulfide")
    cond = generator.encode(conditions)
    parts = [generator.atom_counts(conditions, cond, range(lo, lo + 5), 4).tolist() for lo in (0, 5)]
    assert parts[0] + parts[1] == whole and len(set(whole)) > 2
    by_two = generator.sample(prompt="a layered sulfide", n=5, steps=1, seed=4, batch_size=2)
    by_five = generator.sample(prompt="a layered sulfide", n=5, steps=1, seed=4, batch_size=5)
    assert [len(s) for s in by_two] == [len(s) for s in by_five] == whole[:5]
    assert _counts(generator, n=10, seed=5, prompt="a layered sulfide") != whole


def test_xrd_file_and_spacegroup_condition_sampling(xrd_model, tmp_path):
    import numpy as np

    two_theta = np.arange(5.0, 90.0, 0.02)
    counts = (
        50.0
        + 1000.0 * np.exp(-0.5 * ((two_theta - 31.7) / 0.1) ** 2)
        + 600 * np.exp(-0.5 * (two_theta - 45.4) ** 2 / 0.01)
    )
    scan = tmp_path / "nacl.xy"
    scan.write_text("\n".join(f"{x:.2f} {y:.1f}" for x, y in zip(two_theta, counts, strict=True)))
    generator = CrystalGenerator(xrd_model)
    conditions = generator.resolve(xrd=str(scan), spacegroup="Fm-3m")
    cond = generator.encode(conditions)
    assert cond.present().tolist() == [[True, True]]  # both the pattern and the space group are seen
    structures = generator.sample(xrd=str(scan), spacegroup=225, n=3, steps=2, guidance={"xrd": 2.0}, batch_size=2)
    assert len(structures) == 3 and all(len(s) >= 1 for s in structures)
    again = generator.sample(xrd=str(scan), spacegroup="Fm-3m", n=3, steps=2, guidance={"xrd": 2.0}, batch_size=2)
    assert [s.frac_coords.tolist() for s in again] == [s.frac_coords.tolist() for s in structures]
    other = generator.sample(spacegroup=225, n=3, steps=2, guidance={"spacegroup": 2.0}, batch_size=2)
    assert [s.frac_coords.tolist() for s in other] != [s.frac_coords.tolist() for s in structures]


class _CountingDenoiser(torch.nn.Module):
    """Wraps a denoiser and records the batch size and condition mask of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, noisy, t, cond=None):
        self.calls.append((noisy.num_crystals, None if cond is None else cond.present().tolist()))
        return self.inner(noisy, t, cond)


def test_sampler_runs_one_pass_per_guided_condition(xrd_model):
    """guidance {xrd: 2} with a space group given: u, xrd alone (w 2), space group alone (w 1): 3 stacked copies."""
    generator = CrystalGenerator(xrd_model)
    sampler = generator.sampler(2, {"xrd": 2.0}, 2, resolve_conditions(xrd_model, xrd=torch.ones(256), spacegroup=1))
    spy = _CountingDenoiser(xrd_model.denoiser)
    sampler.denoiser = spy
    cond = generator.encode(resolve_conditions(xrd_model, xrd=torch.ones(256), spacegroup=1))
    sampler.sample(torch.tensor([2, 3]), cond.select([0, 0]), seed=0)
    sizes = {size for size, _ in spy.calls}
    assert sizes == {6}  # 3 copies of 2 crystals
    assert spy.calls[0][1] == [[False, False]] * 2 + [[True, False]] * 2 + [[False, True]] * 2
    spy.calls.clear()
    sampler = generator.sampler(2, 1.0, 2)
    sampler.denoiser = spy
    sampler.sample(torch.tensor([2, 3]), cond.select([0, 0]), seed=0)
    assert {size for size, _ in spy.calls} == {2}  # joint scale 1: the conditional model, one pass
