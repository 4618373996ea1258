"""Composition-first sampling: each crystal's reduced formula drawn from the decoder's composition model given the
prompt, then held while the structure is denoised; seeded per sample, recorded, refused where it cannot apply."""

from __future__ import annotations

import json

import pytest
import torch

from encoders import TextConfig
from mmcrystal.diffusion.composition_model import CompositionModelConfig, reduce_formulas
from mmcrystal.diffusion.conditioning import ConditionConfig, ConditionInputs, composition_counts
from mmcrystal.generate import CrystalDiffusionModel, CrystalGenerator, DiffusionModelConfig, resolve_conditions
from mmcrystal.generation.command import write_samples

# two prompts and the formula the composition model is taught for each (one cell: Li4Fe4P4O16, Na4Cl4)
PROMPTS = {"an olivine phosphate cathode": [3, 26, 15, 8, 8, 8, 8], "a rock-salt halide": [11, 17]}


def _reduced(numbers: torch.Tensor, batch: torch.Tensor, num_crystals: int, num_elements: int) -> torch.Tensor:
    """Reduced formulas `(B, num_elements)` of atoms with crystal indices (columns Z = 1..num_elements)."""
    return reduce_formulas(composition_counts(numbers, batch, num_crystals, num_elements)[:, 1:])


@pytest.fixture(scope="module")
def taught(tiny_parts, normalization) -> CrystalGenerator:
    """A tiny untrained decoder whose composition model is fitted to `PROMPTS` (the denoiser stays random)."""
    denoiser, head = tiny_parts
    torch.manual_seed(0)
    conditions = ConditionConfig(conditions=["text"], cond_dim=16, text=TextConfig(model_name="tiny-random"))
    composition = CompositionModelConfig(enabled=True, hidden_dim=32, num_layers=1, num_heads=2)
    config = DiffusionModelConfig(denoiser=denoiser, conditions=conditions, num_atoms=head, composition=composition,
                                  normalization=normalization)  # fmt: skip
    model = CrystalDiffusionModel(config)
    numbers = torch.tensor([z for cell in PROMPTS.values() for z in cell])
    batch = torch.repeat_interleave(torch.arange(len(PROMPTS)), torch.tensor([len(c) for c in PROMPTS.values()]))
    reduced = _reduced(numbers, batch, len(PROMPTS), 100)
    inputs = ConditionInputs(batch_size=len(PROMPTS), captions=list(PROMPTS), caption_mask=torch.ones(2, dtype=bool))
    optimizer = torch.optim.Adam(model.composition.parameters(), lr=3e-3)
    with torch.no_grad():
        cond = model.condition(inputs)
    for _ in range(150):
        loss, _ = model.composition.loss(reduced, cond)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return CrystalGenerator(model.eval())


def test_drawn_formulas_are_held_and_cells_are_whole_formula_units(taught):
    olivine = taught.sample(prompt="an olivine phosphate cathode", n=4, steps=3, seed=1, composition_first=True)
    assert {s.composition.reduced_formula for s in olivine} == {"LiFePO4"}
    assert all(len(s) % 7 == 0 for s in olivine)
    halide = taught.sample(prompt="a rock-salt halide", n=4, steps=3, seed=1, composition_first=True)
    assert {s.composition.reduced_formula for s in halide} == {"NaCl"}
    # without composition_first the (random) denoiser draws the types: not these formulas
    drawn = taught.sample(prompt="a rock-salt halide", n=4, steps=3, seed=1)
    assert {s.composition.reduced_formula for s in drawn} != {"NaCl"}


def test_seeded_per_sample_and_the_same_through_requests(taught):
    taught.composition_settings = {"temperature": 3.0, "guidance": 1.0}  # hot: formulas vary between samples
    try:
        kwargs = dict(prompt="a rock-salt halide", steps=2, seed=4, composition_first=True)
        six = taught.sample(n=6, batch_size=3, **kwargs)
        assert len({s.composition.reduced_formula for s in six}) > 1
        again = taught.sample(n=6, batch_size=2, **kwargs)
        assert [s.composition for s in again] == [s.composition for s in six]  # formula and count per sample index
        one = taught.sample_requests([{"prompt": "a rock-salt halide", "composition_first": True}], steps=2, seed=4)
        assert one[0].composition == six[0].composition
        # the formulas alone (no structure): exactly those the samples hold
        formulas = taught.sample_formulas(n=6, seed=4, prompt="a rock-salt halide")
        assert [f.reduced_formula for f in formulas] == [s.composition.reduced_formula for s in six]
    finally:
        taught.composition_settings = {"temperature": 1.0, "guidance": 1.0}


def test_chemical_system_limits_the_drawn_formula(taught):
    structures = taught.sample(prompt="an olivine phosphate cathode", n=3, steps=2, composition_first=True,
                               elements="Fe-P-O")  # fmt: skip
    assert all({el.symbol for el in s.composition.elements} <= {"Fe", "P", "O"} for s in structures)


def test_refused_where_it_cannot_apply(taught, text_decoder):
    with pytest.raises(ValueError, match="composition model"):
        resolve_conditions(CrystalGenerator.from_pretrained(text_decoder).model, prompt="x", composition_first=True)
    for request in ({"composition": "NaCl"}, {"prompt": "NaCl crystal", "prompt_formula": "exact"}):
        with pytest.raises(ValueError, match="draws the formula itself"):
            resolve_conditions(taught.model, composition_first=True, **request)
    with pytest.raises(ValueError, match="leave num_atoms unset"):
        taught.sample(prompt="a rock-salt halide", n=2, steps=2, num_atoms=8, composition_first=True)
    taught.composition_settings = {"temperature": 1.0, "top_k": 5}
    try:
        with pytest.raises(ValueError, match="top_k"):
            taught.sample(prompt="a rock-salt halide", n=1, steps=2, composition_first=True)
        taught.composition_settings = {"temperature": "hot"}
        with pytest.raises(ValueError, match="temperature='hot' must be a number"):
            taught.sample(prompt="a rock-salt halide", n=1, steps=2, composition_first=True)
    finally:
        taught.composition_settings = {"temperature": 1.0, "guidance": 1.0}


def test_recorded_with_the_samples(taught, tmp_path):
    taught.composition_settings = {"temperature": 0.0, "guidance": 1.0}
    try:
        write_samples(taught, tmp_path / "out", n=2, batch_size=2, steps=2, prompt="a rock-salt halide",
                      composition_first=True)  # fmt: skip
    finally:
        taught.composition_settings = {"temperature": 1.0, "guidance": 1.0}
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["conditions"]["composition_first"] for r in rows] == [True, True]
    assert {r["formula"] for r in rows} == {"NaCl"}
    request = json.loads((tmp_path / "out" / "progress.json").read_text())["request"]
    assert request["composition_sampling"] == {"temperature": 0.0, "guidance": 1.0}


def test_composition_first_with_symmetry_from_the_prompt(taught, tmp_path):
    from pymatgen.core import Lattice, Structure

    from mmcrystal.evaluation.adherence import symmetry_info
    from mmcrystal.generation.templates import TemplateLibrary

    salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    taught.templates = TemplateLibrary.from_structures([("rocksalt", salt)], source="test crystals")
    taught.composition_settings = {"temperature": 0.0, "guidance": 1.0}
    try:
        write_samples(taught, tmp_path / "out", n=3, batch_size=2, steps=3, prompt="a cubic rock-salt halide",
                      composition_first=True, symmetry="prompt")  # fmt: skip
    finally:
        taught.composition_settings = {"temperature": 1.0, "guidance": 1.0}
        taught.templates = None
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert {r["formula"] for r in rows} == {"NaCl"} and {r["num_atoms"] for r in rows} == {2}
    assert {r["conditions"]["symmetry"] for r in rows} == {"cubic"}
    assert [r["template"] for r in rows] == [{"source": "rocksalt", "spacegroup": 225, "num_atoms": 2}] * 3
    cells = [Structure.from_file(str(tmp_path / "out" / r["cif"])) for r in rows]
    assert [symmetry_info(c, symprec=0.01) for c in cells] == [(225, "cubic")] * 3
    request = json.loads((tmp_path / "out" / "progress.json").read_text())["request"]
    assert request["templates"] == "test crystals" and request["symmetry"] == "cubic"
    assert request["template_start"] == 0.5  # the default start, recorded since it shapes the samples


def test_sample_command_takes_templates_from_prepared_data(text_decoder, mp40_tiny, tmp_path):
    from mmcrystal.generation.command import sample

    with pytest.raises(ValueError, match="--templates"):
        sample(model=str(text_decoder), out=str(tmp_path / "a"), composition="NaCl", symmetry="cubic", n=1, steps=1)
    sample(model=str(text_decoder), out=str(tmp_path / "b"), composition="NaCl", symmetry="cubic",
                     templates=str(mp40_tiny), n=2, steps=2, batch_size=2)  # fmt: skip
    request = json.loads((tmp_path / "b" / "progress.json").read_text())["request"]
    assert request["templates"].endswith("(train)") and request["symmetry"] == "cubic"
    assert len(list((tmp_path / "b" / "cif").glob("*.cif"))) == 2
