"""Formulas said in words (`mmcrystal.diffusion.formula_words`)."""

from __future__ import annotations

import random

import pytest
import torch

from mmcrystal.diffusion.formula_words import compound_class, describe_counts, describe_formulas
from mmcrystal.formulas import formula_counts, formula_word


def _counts(formula: str):
    return formula_counts(f"the {formula} crystal")


@pytest.mark.parametrize(
    ("formula", "name", "covered"),
    [
        ("Li2S", "sulfide", {"S"}),
        ("LiFePO4", "phosphate", {"P", "O"}),
        ("BaTiO3", "titanate", {"Ti", "O"}),
        ("TiO2", "oxide", {"O"}),  # a binary oxide is no titanate
        ("ZrAu3", "intermetallic", set()),
        ("CaGe3", "germanide", {"Ge"}),
        ("Tc3Se4I", "iodide selenide", {"I", "Se"}),
        ("SrSb(HO3)2", "oxide", {"O"}),  # Sb and H are cations next to O
        ("CsPbBr3", "bromide", {"Br"}),
    ],
)
def test_compound_class_names_the_anion(formula, name, covered):
    assert compound_class(_counts(formula)) == (name, covered)


def test_every_style_names_only_elements_of_the_formula():
    names = {"Li": "lithium", "Fe": "iron", "P": "phosphorus", "O": "oxygen"}
    counts = _counts("LiFePO4")
    seen = set()
    for seed in range(60):
        text = describe_counts(counts, random.Random(seed))
        seen.add(text)
        assert "phosphate" in text or "phosphorus" in text or text.startswith("compound of")
        # no element outside the formula is ever named
        for word in ("sodium", "cobalt", "sulfide", "oxide "):
            assert word not in text
        assert formula_word(f"a {text} crystal") is None  # words, never a formula
    assert "lithium iron phosphate" in seen and "phosphate" in seen
    assert any(t.startswith("compound of") and all(n in t for n in names.values()) for t in seen)
    assert any(t.endswith("-containing phosphate") for t in seen)


def test_describe_formulas_replaces_the_formula_and_counts_skips():
    captions = ["Tetragonal crystal structure of CaO10 compound", "Cubic Si", "", "Monoclinic CrReO4 crystal"]
    mask = torch.tensor([True, True, False, True])
    out = describe_formulas(captions, mask, 1.0, random.Random(0))
    assert out.described.tolist() == [True, False, False, True]
    assert out.skipped == 1  # "Cubic Si" names no formula; the absent caption is not counted
    assert out.captions[1:3] == captions[1:3]
    for i in (0, 3):
        assert formula_word(out.captions[i]) is None
        assert out.captions[i] != captions[i]
    assert "calcium" in out.captions[0] or "oxide" in out.captions[0]
    assert out.examples[0][0] == "CaO10"
    # rate 0 changes nothing; the same seed gives the same words
    assert describe_formulas(captions, mask, 0.0, random.Random(0)).captions == captions
    assert describe_formulas(captions, mask, 1.0, random.Random(0)).captions == out.captions
