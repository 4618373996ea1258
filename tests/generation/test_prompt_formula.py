"""What a formula named in a prompt does (`prompt_formula`): the atom count only ("atoms", the default), the atom
types drawn from its elements ("elements"), the types held at the formula ("exact": structure prediction by
infilling with a de novo model), or nothing ("ignore"); and an explicit composition given to a de novo model."""

from __future__ import annotations

import json

import pytest

from mmcrystal.generate import CrystalGenerator, resolve_conditions
from mmcrystal.generation.command import write_samples

PROMPT = "LiFePO4 in an orthorhombic cell"


@pytest.fixture()
def generator(text_decoder) -> CrystalGenerator:
    return CrystalGenerator.from_pretrained(text_decoder)


def _elements(structure) -> set[str]:
    return {el.symbol for el in structure.composition.elements}


def test_prompt_formula_uses(generator):
    kwargs = dict(prompt=PROMPT, n=6, steps=3, seed=5, batch_size=3)
    atoms = generator.sample(**kwargs)
    assert all(len(s) % 7 == 0 for s in atoms)
    assert any(not _elements(s) <= {"Li", "Fe", "P", "O"} for s in atoms)  # untrained: the text decides nothing
    elements = generator.sample(**kwargs, prompt_formula="elements")
    assert [len(s) for s in elements] == [len(s) for s in atoms]
    assert all(_elements(s) <= {"Li", "Fe", "P", "O"} for s in elements)
    exact = generator.sample(**kwargs, prompt_formula="exact")
    assert [len(s) for s in exact] == [len(s) for s in atoms]
    assert {s.composition.reduced_formula for s in exact} == {"LiFePO4"}
    ignored = generator.sample(**kwargs, prompt_formula="ignore")
    assert any(len(s) % 7 for s in ignored)  # counts from the head alone


def test_prompt_formula_is_resolved_and_recorded(generator, tmp_path):
    model = generator.model
    assert resolve_conditions(model, prompt=PROMPT).record().get("prompt_formula_use") is None  # the default
    exact = resolve_conditions(model, prompt=PROMPT, prompt_formula="exact")
    assert exact.held.reduced_formula == "LiFePO4" and exact.composition is None
    assert resolve_conditions(model, prompt=PROMPT, prompt_formula="elements").elements == ["Li", "O", "P", "Fe"]
    assert resolve_conditions(model, prompt=PROMPT, prompt_formula="ignore").prompt_formula is None
    assert resolve_conditions(model, prompt="a cubic oxide", prompt_formula="exact").held is None  # no formula
    with pytest.raises(ValueError, match="prompt_formula must be one of"):
        resolve_conditions(model, prompt=PROMPT, prompt_formula="strict")
    with pytest.raises(ValueError, match="outside elements"):
        resolve_conditions(model, prompt=PROMPT, prompt_formula="exact", elements="Fe-P-O")
    write_samples(generator, tmp_path / "out", n=2, batch_size=2, steps=2, prompt=PROMPT, prompt_formula="exact")
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["conditions"]["prompt_formula_use"] for r in rows] == ["exact", "exact"]
    assert {r["formula"] for r in rows} == {"LiFePO4"}


def test_held_and_drawn_requests_share_a_batch(generator):
    requests = [
        {"prompt": PROMPT, "prompt_formula": "exact", "properties": {"band_gap": 1.0}},
        {"prompt": "a layered sulfide", "prompt_formula": "exact", "properties": {"band_gap": 2.0}, "num_atoms": 6},
        {"prompt": "NaCl rock salt", "prompt_formula": "exact", "properties": {"band_gap": 5.0}, "num_atoms": 8},
    ]
    structures = generator.sample_requests(requests, steps=3, seed=0, batch_size=3)
    assert structures[0].composition.reduced_formula == "LiFePO4"
    assert len(structures[1]) == 6 and structures[1].composition.reduced_formula != "NaCl"
    assert structures[2].composition.reduced_formula == "NaCl" and len(structures[2]) == 8
    with pytest.raises(ValueError, match="not a whole number of"):
        generator.sample_requests([{"prompt": PROMPT, "prompt_formula": "exact", "num_atoms": 8}], steps=1)


def test_a_composition_given_to_a_de_novo_model_is_held(generator, xrd_model):
    structures = generator.sample(prompt="an olivine", composition="Li2Fe2P2O8", n=2, steps=3, seed=0)
    assert [len(s) for s in structures] == [14, 14]
    assert {s.composition.reduced_formula for s in structures} == {"LiFePO4"}
    conditions = resolve_conditions(xrd_model, composition="NaCl")
    assert conditions.held.reduced_formula == "NaCl" and "composition" not in xrd_model.conditions.names
    assert len(CrystalGenerator(xrd_model).sample(composition="NaCl", n=1, steps=2, num_atoms=4)[0]) == 4


def test_formula_token_decoder_round_trips(tmp_path, normalization, tiny_parts):
    """A decoder whose text condition reads the caption's formula as element tokens, with atom-count-scaled
    lattice lengths, loads from its folder alone and samples from a prompt; the prompt's formula reaches the
    condition (an untrained decoder's samples need not follow it)."""
    import torch

    from encoders import TextConfig
    from mmcrystal.diffusion import DiffusionConfig, LatticeConfig
    from mmcrystal.diffusion.conditioning import ConditionConfig, ConditionInputs
    from mmcrystal.generate import CrystalDiffusionModel, DiffusionModelConfig
    from mmcrystal.pretrained import save_pretrained

    denoiser, head = tiny_parts
    torch.manual_seed(0)
    conditions = ConditionConfig(conditions=["text"], cond_dim=16, text=TextConfig(model_name="tiny-random"),
                                 text_formula_tokens=True)  # fmt: skip
    diffusion = DiffusionConfig(lattice=LatticeConfig(scale_lengths_with_atoms=True))
    config = DiffusionModelConfig(denoiser=denoiser, diffusion=diffusion, conditions=conditions, num_atoms=head,
                                  normalization=normalization)  # fmt: skip
    model = CrystalDiffusionModel(config)
    folder = save_pretrained(model, model.export_config(), tmp_path / "pretrained", "CrystalDiffusionModel")
    generator = CrystalGenerator.from_pretrained(folder)
    loaded = generator.model
    assert loaded.config.conditions.text_formula_tokens and loaded.diffusion.lattice.config.scale_lengths_with_atoms
    assert loaded.diffusion.lattice.normalization.log_num_atoms_mean == pytest.approx(
        normalization["lattice"]["log_num_atoms_mean"]
    )
    cond = loaded.condition(ConditionInputs(batch_size=1, captions=[PROMPT], caption_mask=torch.ones(1, dtype=bool)))
    plain = loaded.condition(ConditionInputs(batch_size=1, captions=["an orthorhombic cell"],
                                             caption_mask=torch.ones(1, dtype=bool)))  # fmt: skip
    assert bool(cond.mask[0, -4:].all())  # the text tokens end with Li, O, P, Fe tokens (in order of Z)
    assert not bool(plain.mask[0, -1])  # no formula: one masked placeholder token
    structures = generator.sample(prompt=PROMPT, n=3, steps=3, seed=1, batch_size=3)
    assert len(structures) == 3 and all(len(s) % 7 == 0 for s in structures)
