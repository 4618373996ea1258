"""Formulas said in words, for training the composition model on captions that name no formula.

Why: every MP-20 / MP-40 training caption states its formula ("Tetragonal CaGe3 crystal structure"), so the
composition model learns to copy formulas and never what "sulfide" or "lithium" mean. Users also write "a layered
lithium sulfide" or "a phosphate framework": on such prompts the copy-trained decoders of BENCHMARKS.md (session 9)
put the named element in only 10-19 % of their formulas (`scripts/probe_open_prompts.py`). Describing a share of
the training captions' formulas in words, with the true formula as the target, teaches p(formula | words).

Unlike the count rewriting of `formula_augmentation`, a description is true of the crystal ("CaGe3" -> "calcium
germanide"), so its rows train the generator as well as the copy gate (which learns that nothing is to be copied).
`CrystalDiffusion(train_only=["composition"], composition_describe=...)` applies it; validation never describes.

A description names the compound's class by its most electronegative element from `ANION_NAMES` (O -> oxide; with
an oxyanion former and at least three O per former atom the -ate name: LiFePO4 -> phosphate, BaTiO3 -> titanate;
no anion former: intermetallic), and tells one of four things, drawn per caption:
  - every element: "lithium iron phosphate", "zirconium gold intermetallic",
  - the class alone: "phosphate", "intermetallic compound",
  - one other element and the class: "lithium-containing phosphate",
  - every element as a list: "compound of lithium, iron, phosphorus and oxygen".
A second anion former at least as electronegative as sulfur (Pauling 2.5) joins the class name (Tc3Se4I -> iodide
selenide, names in alphabetical order as IUPAC orders anions). Element names are pymatgen's (`Element.long_name`),
with aluminium / caesium drawn half the time for aluminum / cesium. The caption's written element order is kept.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mmcrystal.formulas import formula_counts, formula_word
from mmcrystal.modalities.scattering import SYMBOLS

__all__ = ["ANION_NAMES", "OXYANION_NAMES", "FormulaDescription", "compound_class", "describe_counts",
           "describe_formulas"]  # fmt: skip

_SYMBOL = re.compile(r"[A-Z][a-z]?")  # an element symbol inside a formula word

# binary-compound names of anion-forming elements (IUPAC Nomenclature of Inorganic Chemistry, 2005)
ANION_NAMES = {
    "H": "hydride", "B": "boride", "C": "carbide", "N": "nitride", "O": "oxide", "F": "fluoride",
    "Si": "silicide", "P": "phosphide", "S": "sulfide", "Cl": "chloride", "Ge": "germanide", "As": "arsenide",
    "Se": "selenide", "Br": "bromide", "Sb": "antimonide", "Te": "telluride", "I": "iodide",
}  # fmt: skip
# oxoanion names of the central atom (same source): LiFePO4 is a phosphate, BaTiO3 a titanate
OXYANION_NAMES = {
    "B": "borate", "C": "carbonate", "N": "nitrate", "Si": "silicate", "P": "phosphate", "S": "sulfate",
    "Ti": "titanate", "V": "vanadate", "Cr": "chromate", "Mn": "manganate", "Ge": "germanate", "As": "arsenate",
    "Se": "selenate", "Nb": "niobate", "Mo": "molybdate", "Sn": "stannate", "Ta": "tantalate", "W": "tungstate",
}  # fmt: skip


@functools.cache  # called per element of every described caption, every training step
def _element(symbol: str):
    from pymatgen.core import Element

    return Element(symbol)


_SPELLINGS = {"aluminum": "aluminium", "cesium": "caesium"}  # both are written; pymatgen has the first


def _name(symbol: str, rng: random.Random | None = None) -> str:
    name = _element(symbol).long_name.lower()
    if name in _SPELLINGS and rng is not None and rng.random() < 0.5:
        return _SPELLINGS[name]
    return name


def compound_class(counts: Sequence[tuple[int, int]]) -> tuple[str, set[str]]:
    """The class name of a formula given as (Z, count) pairs and the symbols that name covers.

    The anion is the most electronegative (Pauling) element of `ANION_NAMES` among at least two elements; with O,
    the oxyanion former (`OXYANION_NAMES`, the one with most atoms, >= 1 per 3 O) gives the -ate name and is covered
    too. Other anion formers with electronegativity >= 2.5 (S, Se, I, Br, Cl, N, C, F, O) join the name. No anion
    former: ("intermetallic", {}).
    """
    amounts = {SYMBOLS[int(z)]: int(n) for z, n in counts}
    candidates = [s for s in amounts if s in ANION_NAMES] if len(amounts) > 1 else []
    if not candidates:
        return "intermetallic", set()
    anion = max(candidates, key=lambda s: (_element(s).X, s))
    covered, names = {anion}, []
    if anion == "O":
        formers = [s for s in amounts if s in OXYANION_NAMES and 3 * amounts[s] <= amounts["O"]]
        if formers and len(amounts) > 2:  # BaTiO3 is a titanate; TiO2 stays an oxide
            former = max(formers, key=lambda s: (amounts[s], s))
            covered.add(former)
            names.append(OXYANION_NAMES[former])
    if not names:
        names.append(ANION_NAMES[anion])
    for other in candidates:
        if other not in covered and _element(other).X >= 2.5:  # a second anion: Tc3Se4I is an iodide selenide
            covered.add(other)
            names.append(ANION_NAMES[other])
    return " ".join(sorted(names)), covered


def describe_counts(counts: Sequence[tuple[int, int]], rng: random.Random) -> str:
    """Words for a formula given as (Z, count) pairs (module docstring), drawn with `rng`."""
    symbols = [SYMBOLS[int(z)] for z, _ in counts]  # in the caller's order
    name, covered = compound_class(counts)
    others = [s for s in symbols if s not in covered]
    style = rng.choices(("every", "class", "one", "list"), weights=(0.4, 0.25, 0.2, 0.15))[0]
    if style == "list" or (style in ("every", "one") and not others):
        names = [_name(s, rng) for s in symbols]
        return f"compound of {', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else f"{names[0]} compound"
    if style == "class":
        return "intermetallic compound" if name == "intermetallic" else name
    if style == "one":
        return f"{_name(rng.choice(others), rng)}-containing {name}"
    return " ".join([_name(s, rng) for s in others] + [name])


@dataclass
class FormulaDescription:
    """Captions `(B,)` with their formula said in words where `described` `(B,)` bool, and how many chosen rows had
    no formula to describe."""

    captions: list[str]
    described: torch.Tensor
    skipped: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)


def describe_formulas(
    captions: Sequence[str], caption_mask: torch.Tensor, rate: float, rng: random.Random, num_elements: int = 100
) -> FormulaDescription:
    """Replace the formula of a `rate` fraction of the present captions with words (module docstring); the
    crystals, and so the composition targets, are unchanged.

    Args:
        captions: B captions ("" where absent).
        caption_mask: `(B,)` bool, captions present.
        rate: Fraction of present captions to describe.
        rng: Source of every choice (seeded by the caller).
        num_elements: Largest Z a formula may hold (the text condition's `num_elements`).
    """
    out = list(captions)
    described = torch.zeros(len(captions), dtype=torch.bool)
    skipped, examples = 0, []
    for i, present in enumerate(caption_mask.tolist()):
        if not present or rng.random() >= rate:
            continue
        word = formula_word(captions[i], num_elements)
        if word is None:  # no formula (elemental crystals, free text): nothing to say in other words
            skipped += 1
            continue
        written = list(dict.fromkeys(_SYMBOL.findall(word)))  # the caption's element order
        counts = sorted(formula_counts(captions[i], num_elements), key=lambda zn: written.index(SYMBOLS[zn[0]]))
        text = describe_counts(counts, rng)
        out[i] = captions[i].replace(word, text, 1)
        described[i] = True
        if len(examples) < 3:
            examples.append((word, text))
    return FormulaDescription(out, described, skipped, examples)
