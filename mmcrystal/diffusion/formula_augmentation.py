"""Formula rewriting for training the composition model alone: captions whose formula says other counts.

Why: the composition model has to copy the formula a caption names (`CompositionModelConfig.copy`), but the
training captions name the formulas of the training crystals only: few formula units above 24 atoms and few counts
above 12 (MP-20 has almost none). On MP-40 captions the model then copies short formulas and garbles long ones
(Ba4Fe9O20 -> Ba4(FeO)9, Y5Zr3(Ni4As3)4 -> Y5(Ni4As3)4; BENCHMARKS.md, "Copying formula counts"). Rewriting a
fraction of the training captions' formulas with other whole counts (and taking the rewritten formula as the target)
teaches "write what the caption says" for counts and lengths the crystals never had.

This is only sound where no crystal is trained on the rewritten caption: `CrystalDiffusion(train_only=["composition"],
composition_augment=...)` applies it to the composition model's condition alone. Validation never rewrites. And the
rewritten rows train the copy pointer and its gate only (`CompositionModel.loss(copy_only=...)`: the generator's
logits are detached there): trained on them too, the generator took the rewrites' made-up counts as a prior and, for
prompts that name no formula, wrote ErNi22 or ErBr22. The cost that remains: a model trained this way follows the
words of a prompt without a formula less (elements named by "sulfide", "lithium": 27 % -> 10 % of draws on
`scripts/probe_open_prompts.py`; BENCHMARKS.md, session 9); saying a share of the other captions' formulas in
words (`formula_words`, `composition_describe`) restores that (94 %, session 10).

A rewrite keeps the caption's elements in the caption's order and draws each count anew with probability 1/2
(uniform in 1..max_count), sometimes adds one element taken from another caption of the batch or drops one; the
result must stay within max_atoms and differ from the original, else the caption is left as it is (counted).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mmcrystal.formulas import formula_counts, formula_word
from mmcrystal.modalities.scattering import SYMBOLS

__all__ = ["FormulaRewrite", "rewrite_counts", "rewrite_formulas", "write_formula"]

_SYMBOL = re.compile(r"[A-Z][a-z]?")  # an element symbol inside a formula word (Cl, not C then l)


def write_formula(counts: Sequence[tuple[int, int]]) -> str:
    """A formula string from (Z, count) pairs in the given order; count 1 is left out ("Ba4Fe9O20")."""
    return "".join(f"{SYMBOLS[z]}{n if n != 1 else ''}" for z, n in counts)


def rewrite_counts(
    counts: Sequence[tuple[int, int]],
    rng: random.Random,
    max_count: int,
    max_atoms: int,
    pool: Sequence[int] = (),
    tries: int = 10,
) -> list[tuple[int, int]] | None:
    """New (Z, count) pairs for a formula, in the same element order (an added element goes last), or None when no
    rewrite within `max_atoms` that differs from `counts` was found in `tries` draws."""
    original = [(int(z), int(n)) for z, n in counts]
    for _ in range(tries):
        new = [(z, rng.randint(1, max_count) if rng.random() < 0.5 else min(n, max_count)) for z, n in original]
        extra = [z for z in pool if z not in {z for z, _ in new}]
        if extra and rng.random() < 0.15:
            new.append((rng.choice(extra), rng.randint(1, max_count)))
        elif len(new) > 2 and rng.random() < 0.15:
            new.pop(rng.randrange(len(new)))
        if sum(n for _, n in new) <= max_atoms and sorted(new) != sorted(original):
            return new
    return None


@dataclass
class FormulaRewrite:
    """Rewritten captions `(B,)`, their atom counts `(B, num_elements + 1)` (the composition model's targets), which
    rows were rewritten, and how many chosen rows could not be (no formula in the caption, or no rewrite found)."""

    captions: list[str]
    composition: torch.Tensor
    rewritten: torch.Tensor
    skipped: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)


def rewrite_formulas(
    captions: Sequence[str],
    caption_mask: torch.Tensor,
    composition: torch.Tensor,
    rate: float,
    rng: random.Random,
    max_count: int,
    max_atoms: int,
) -> FormulaRewrite:
    """Rewrite the formula of a `rate` fraction of the present captions (module docstring).

    Args:
        captions: B captions ("" where absent).
        caption_mask: `(B,)` bool, captions present.
        composition: `(B, num_elements + 1)` atom counts of the crystals (column Z).
        rate: Fraction of present captions to rewrite.
        rng: Source of every choice (seeded by the caller).
        max_count: Largest count drawn (the composition model's `max_count`).
        max_atoms: Largest formula, in atoms (the composition model's `max_atoms`).
    """
    num_elements = composition.shape[1] - 1
    out_captions, out_composition = list(captions), composition.clone()
    rewritten = torch.zeros(len(captions), dtype=torch.bool)
    present = [i for i, p in enumerate(caption_mask.tolist()) if p]
    pool = sorted({z for i in present for z, _ in formula_counts(captions[i], num_elements)})
    skipped, examples = 0, []
    for i in present:
        if rng.random() >= rate:
            continue
        word = formula_word(captions[i], num_elements)
        if word is None:
            skipped += 1
            continue
        # the caption's own element order: first appearance of each symbol in the written formula
        written = list(dict.fromkeys(_SYMBOL.findall(word)))
        order = sorted(formula_counts(captions[i], num_elements), key=lambda zn: written.index(SYMBOLS[zn[0]]))
        new = rewrite_counts(order, rng, max_count, max_atoms, pool)
        if new is None:
            skipped += 1
            continue
        text = write_formula(new)
        out_captions[i] = captions[i].replace(word, text, 1)
        row = torch.zeros(num_elements + 1, dtype=composition.dtype)
        for z, n in new:
            row[z] = n
        out_composition[i] = row.to(composition.device)
        rewritten[i] = True
        if len(examples) < 3:
            examples.append((word, text))
    return FormulaRewrite(out_captions, out_composition, rewritten, skipped, examples)
