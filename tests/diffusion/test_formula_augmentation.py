"""Formula rewriting for composition-only training: rewritten captions say what their targets are."""

from __future__ import annotations

import random

import torch

from mmcrystal.diffusion.formula_augmentation import rewrite_counts, rewrite_formulas, write_formula
from mmcrystal.formulas import formula_counts, formula_word

CAPTIONS = [
    "Monoclinic structure of Ba4Fe9O20 compound.",
    "Erbium compound in a triclinic cell",  # no formula: never rewritten
    "Cubic NaCl rock salt.",
    "Er5(Ge5Ir2)2 crystallises in a hexagonal cell",
    "CCl4 molecular crystal",
]


def _composition(captions) -> torch.Tensor:
    rows = torch.zeros(len(captions), 101)
    for i, caption in enumerate(captions):
        for z, n in formula_counts(caption):
            rows[i, z] = n
    return rows


def test_rewritten_captions_name_their_new_targets():
    mask = torch.tensor([True, True, True, True, False])  # the last caption is absent
    composition = _composition(CAPTIONS)
    out = rewrite_formulas(CAPTIONS, mask, composition, 1.0, random.Random(3), max_count=24, max_atoms=40)
    assert out.rewritten.tolist() == [True, False, True, True, False]
    assert out.skipped == 1  # the caption without a formula
    for i in range(len(CAPTIONS)):
        if not out.rewritten[i]:
            assert out.captions[i] == CAPTIONS[i] and torch.equal(out.composition[i], composition[i])
            continue
        counts = formula_counts(out.captions[i])
        assert counts != formula_counts(CAPTIONS[i])
        assert {z: n for z, n in counts} == {z: int(n) for z, n in enumerate(out.composition[i].tolist()) if n}
        assert sum(n for _, n in counts) <= 40 and max(n for _, n in counts) <= 24
        old = formula_word(CAPTIONS[i])
        assert out.captions[i] == CAPTIONS[i].replace(old, formula_word(out.captions[i]), 1)  # only the formula


def test_rewriting_is_seeded_and_rate_zero_changes_nothing():
    mask = torch.ones(len(CAPTIONS), dtype=torch.bool)
    composition = _composition(CAPTIONS)
    a = rewrite_formulas(CAPTIONS, mask, composition, 0.5, random.Random(7), 24, 40)
    b = rewrite_formulas(CAPTIONS, mask, composition, 0.5, random.Random(7), 24, 40)
    assert a.captions == b.captions and torch.equal(a.composition, b.composition)
    none = rewrite_formulas(CAPTIONS, mask, composition, 0.0, random.Random(7), 24, 40)
    assert none.captions == CAPTIONS and not none.rewritten.any()


def test_rewrite_keeps_the_written_element_order_and_limits():
    # CCl4: C is written first; a naive search for "C" inside "Cl" must not reorder it
    rng = random.Random(0)
    for _ in range(50):
        new = rewrite_counts([(6, 1), (17, 4)], rng, max_count=24, max_atoms=10)
        assert new is None or (new[0][0] == 6 and sum(n for _, n in new) <= 10 and new != [(6, 1), (17, 4)])
    assert rewrite_counts([(6, 1)], rng, max_count=1, max_atoms=1) is None  # nothing else fits
    # in a caption too: the rewritten formula keeps C before Cl, as written ("ClC4" would read as a different word)
    caption = ["CCl4 molecular crystal", "SiC is hard"]
    for seed in range(10):
        out = rewrite_formulas(caption, torch.tensor([True, False]), _composition(caption), 1.0, random.Random(seed),
                               24, 40)  # fmt: skip
        if out.rewritten[0]:
            assert formula_word(out.captions[0]).startswith("C") and not formula_word(out.captions[0]).startswith("Cl")
    assert write_formula([(56, 4), (26, 9), (8, 20)]) == "Ba4Fe9O20"
    assert write_formula([(11, 1), (17, 1)]) == "NaCl"
