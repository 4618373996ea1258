"""Sampling constraints and batched requests: a chemical system (`elements`) restricts de novo atom types;
`CrystalGenerator.sample_requests` samples one crystal per request (mixed prompts, targets, compositions) in one
reverse loop and equals one `sample` call when the requests are the same."""

from __future__ import annotations

import json

import pytest
import torch
from pymatgen.core import Composition

from mmcrystal.generate import CrystalGenerator, resolve_conditions
from mmcrystal.generation.command import write_samples


@pytest.fixture()
def generator(text_decoder) -> CrystalGenerator:
    return CrystalGenerator.from_pretrained(text_decoder)


@pytest.fixture(scope="module")
def csp_generator(normalization, tiny_parts) -> CrystalGenerator:
    from mmcrystal.diffusion import AtomTypeConfig, DiffusionConfig
    from mmcrystal.diffusion.conditioning import ConditionConfig
    from mmcrystal.generate import CrystalDiffusionModel, DiffusionModelConfig

    denoiser, head = tiny_parts
    torch.manual_seed(0)
    conditions = ConditionConfig(conditions=["composition"], cond_dim=16, drop_prob={"composition": 0.0})
    model = CrystalDiffusionModel(DiffusionModelConfig(
        denoiser=denoiser, diffusion=DiffusionConfig(types=AtomTypeConfig(fixed_composition=True)),
        conditions=conditions, num_atoms=head, normalization=normalization))  # fmt: skip
    return CrystalGenerator(model.eval())


def _elements(structures) -> set[str]:
    return {el.symbol for s in structures for el in s.composition.elements}


def test_elements_restrict_de_novo_samples_to_the_chemical_system(generator, tmp_path):
    free = generator.sample(prompt="an oxide", n=6, steps=3, seed=1)
    assert not _elements(free) <= {"Ti", "O"}  # the untrained decoder draws from all elements
    structures = generator.sample(prompt="an oxide", n=6, steps=3, seed=1, elements="Ti-O")
    assert _elements(structures) <= {"Ti", "O"}
    assert [len(s) for s in structures] == [len(s) for s in free]  # atom counts do not depend on the system
    summary = write_samples(generator, tmp_path / "out", n=4, batch_size=2, steps=2, prompt="x", elements=["O", "Ti"])
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and summary
    assert rows[0]["conditions"]["elements"] == ["O", "Ti"]  # sorted by Z, recorded with every sample
    assert {el.symbol for r in rows for el in Composition(r["formula"]).elements} <= {"Ti", "O"}


def test_elements_errors(generator):
    model = generator.model
    assert resolve_conditions(model, elements="O, Ti  ,Li").elements == ["Li", "O", "Ti"]
    with pytest.raises(ValueError, match="not an element symbol"):
        resolve_conditions(model, elements="Li-Xx-O")
    with pytest.raises(ValueError, match="names no element"):
        resolve_conditions(model, elements=" - ")
    with pytest.raises(ValueError, match=r"outside elements \['O', 'Fe'\]|outside elements"):
        resolve_conditions(model, prompt="LiFePO4 in an orthorhombic cell", elements="Fe-O")


def test_same_requests_equal_one_sample_call(generator):
    request = {"prompt": "a layered sulfide", "properties": {"band_gap": 1.5}}
    one_call = generator.sample(**request, n=5, steps=3, seed=2, batch_size=2)
    batched = generator.sample_requests([request] * 5, steps=3, seed=2, batch_size=2)
    assert [len(s) for s in batched] == [len(s) for s in one_call]
    for a, b in zip(batched, one_call, strict=True):
        assert a.species == b.species
        assert torch.allclose(torch.tensor(a.frac_coords), torch.tensor(b.frac_coords), atol=1e-5)


def test_mixed_requests_in_one_batch(generator):
    requests = [
        {"prompt": "a cubic perovskite oxide", "properties": {"band_gap": 3.0}, "num_atoms": 5},
        {"prompt": "LiFePO4 in an orthorhombic cell", "properties": {"band_gap": 0.5}, "elements": "Li-Fe-P-O"},
        {"prompt": "a rock-salt NaCl crystal", "properties": {"band_gap": 5.0}, "num_atoms": 8, "elements": "Na-Cl"},
    ]
    seen = []
    structures = generator.sample_requests(requests, steps=3, seed=0, batch_size=3,
                                           callback=lambda s, k: seen.append((k, len(s))))  # fmt: skip
    assert seen == [(0, 3)]
    assert len(structures[0]) == 5 and len(structures[2]) == 8 and len(structures[1]) % 7 == 0
    assert _elements([structures[1]]) <= {"Li", "Fe", "P", "O"}
    assert _elements([structures[2]]) <= {"Na", "Cl"}
    assert not _elements([structures[0]]) <= {"Na", "Cl"}  # the other crystals are not constrained
    with pytest.raises(ValueError, match="different conditions"):
        generator.sample_requests([{"prompt": "x"}, {"properties": {"band_gap": 1.0}}], steps=1)
    assert generator.sample_requests([], steps=1) == []


def test_csp_requests_keep_each_composition(csp_generator):
    formulas = ["SrTiO3", "NaCl", "Li2O", "Sr2Ti2O6"]
    structures = csp_generator.sample_requests([{"composition": f} for f in formulas], steps=3, seed=0, batch_size=3)
    assert [s.composition.reduced_formula for s in structures] == ["SrTiO3", "NaCl", "Li2O", "SrTiO3"]
    assert [len(s) for s in structures] == [5, 2, 3, 10]
    alone = csp_generator.sample(composition="NaCl", n=1, steps=3, seed=0, batch_size=1)
    assert alone[0].composition == structures[1].composition
