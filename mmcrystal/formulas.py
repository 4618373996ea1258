"""Chemical formulas in text: parse a formula, find the first one a prompt or caption names.

A word counts as a chemical formula when it is made only of element symbols, counts and parentheses (Er5(Ge5Ir2)2),
names at least two different real elements with whole counts, and is not an all-capital word without digits (FCC,
BCC, HCP, DFT, BN, KI are read as acronyms: write B1N1 to mean the compound). Words glued to "-type" or followed by
"type" / "prototype" (a NiAs-type FeS) name a structure type, not the compound, and are skipped. The first formula
left is the prompt's formula.

Used by sampling (`mmcrystal.generation.conditions`: atom counts, `prompt_formula`) and by the text condition's
formula tokens (`mmcrystal.diffusion.conditioning`, `ConditionConfig.text_formula_tokens`), so that training
captions and users' prompts are read by the same rules.
"""

from __future__ import annotations

import functools
import logging
import re

__all__ = ["formula_counts", "formula_in_prompt", "formula_word", "parse_composition"]

log = logging.getLogger(__name__)

_FORMULA_WORD = re.compile(r"^(?:[A-Z][a-z]?|\d+(?:\.\d+)?|[()\[\]])+$")
_WORD_SPLIT = re.compile(r"[\s,;:!?\"'/]+")
_PROTOTYPE_NEXT = ("type", "prototype", "structure-type")


def parse_composition(formula: str, num_elements: int = 100):
    """A pymatgen `Composition` with whole, positive atom counts of real elements up to Z = `num_elements`."""
    from pymatgen.core import Composition

    try:
        comp = Composition(formula)
    except Exception as exc:  # noqa: BLE001 - pymatgen raises several types for unparsable formulas
        raise ValueError(f"composition {formula!r} is not a chemical formula ({exc})") from None
    if comp.num_atoms < 1 or any(abs(a - round(a)) > 1e-6 for a in comp.values()):
        raise ValueError(f"composition {formula!r} must have whole numbers of atoms")
    if not comp.valid:
        raise ValueError(f"composition {formula!r} names something that is not an element")
    beyond = [el.symbol for el in comp.elements if num_elements < el.Z]
    if beyond:
        raise ValueError(f"composition {formula!r} has elements beyond Z = {num_elements}: {beyond}")
    return comp


def formula_in_prompt(prompt: str, num_elements: int = 100):
    """The first chemical formula a prompt names (rules in the module docstring) as a `Composition`, or None."""
    return _first_formula(prompt, num_elements, warn=True)


def formula_word(text: str, num_elements: int = 100) -> str | None:
    """The first formula as `text` writes it ("Er5(Ge5Ir2)2"), or None: the substring `formula_counts` reads."""
    found = _formulas(text, num_elements)
    return found[0][1] if found else None


def _first_formula(prompt: str, num_elements: int = 100, warn: bool = False):
    found = [comp for comp, _ in _formulas(prompt, num_elements)]
    if warn and len({c.reduced_formula for c in found}) > 1:
        log.warning("prompt names several formulas %s; the atom count follows the first",
                    [c.reduced_formula for c in found])  # fmt: skip
    return found[0] if found else None


def _formulas(prompt: str, num_elements: int = 100) -> list:
    """(Composition, word as written) of every formula the prompt names, in order."""
    words = [w.strip(".()[]") if w.count("(") != w.count(")") else w.rstrip(".") for w in _WORD_SPLIT.split(prompt)]
    found = []
    for i, word in enumerate(words):
        core, _, suffix = word.partition("-")
        next_word = words[i + 1].lower() if i + 1 < len(words) else ""
        if suffix.lower().startswith("type") or next_word in _PROTOTYPE_NEXT:
            continue  # a structure type (NiAs-type), not the compound
        if not _FORMULA_WORD.match(core) or (core.isupper() and not any(c.isdigit() for c in core)):
            continue
        try:
            comp = parse_composition(core, num_elements)
        except ValueError:
            continue
        if len(comp.elements) >= 2:
            found.append((comp, core))
    return found


@functools.lru_cache(maxsize=65536)
def formula_counts(text: str, num_elements: int = 100) -> tuple[tuple[int, int], ...]:
    """(Z, atoms) pairs of the first formula `text` names, in order of Z; () when it names none. Cached: training
    reads the same captions every epoch."""
    comp = _first_formula(text, num_elements)
    if comp is None:
        return ()
    return tuple(sorted((el.Z, int(round(n))) for el, n in comp.items()))
