"""A user's sampling request -> validated conditions: prompt, properties, composition, XRD pattern, space group, and
the guidance scales, checked against what the model was trained on (a condition it does not know raises).

    conditions = resolve_conditions(model, prompt="LiFePO4 in an orthorhombic cell", xrd="scan.xy", spacegroup="Pnma")
    guidance = guidance_config(model, conditions, {"text": 3.0, "xrd": 1.5})

Formulas in prompts (`mmcrystal.formulas.formula_in_prompt`, rules there): the first formula a prompt names is used,
as `prompt_formula` says (`PROMPT_FORMULA_USES`):
  - "atoms" (default): only the atom count, restricted to multiples of the formula (rule in generator.py): the
    prompt alone, through the learned text condition, decides the atom types. This is what text benchmarks measure.
  - "elements": also restrict the atom types to the formula's elements (the chemical-system mask of `elements`).
  - "exact": hold the atom types fixed at the formula (at the drawn cell size) through the whole reverse loop, so
    the de novo model only places them: crystal structure prediction by infilling, with the text still guiding
    lattice and coordinates. Composition match is then 100 % by construction and measures nothing.
  - "ignore": do not look for a formula.
`composition_first` (models trained with a composition model, `mmcrystal.diffusion.composition_model`): the reduced
formula of each crystal is drawn from p(formula | condition) first, then held fixed like "exact" while the structure
is denoised; a formula in the prompt then only informs the condition (the model reads it; nothing is parsed into
the types), which keeps the Chemeleon protocol's rule that the text alone decides the composition.
An explicit `composition` given to a de novo model that was not trained with a composition condition is used the
same way as "exact" (types held fixed); a model with that condition is conditioned on it instead, types drawn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmcrystal.diffusion.guidance import GuidanceConfig
from mmcrystal.formulas import formula_in_prompt, parse_composition

__all__ = [
    "PROMPT_FORMULA_USES",
    "SampleConditions",
    "formula_in_prompt",
    "guidance_config",
    "load_xrd_pattern",
    "parse_composition",
    "parse_elements",
    "parse_guidance",
    "parse_spacegroup",
    "resolve_conditions",
    "xrd_grid",
]

log = logging.getLogger(__name__)

PROMPT_FORMULA_USES = ("atoms", "elements", "exact", "ignore")


@dataclass
class SampleConditions:
    """The conditions of one request, validated against a model.

    Attributes:
        prompt: Caption, or None.
        properties: {name: value in manifest units}, or None.
        composition: pymatgen `Composition` given explicitly (CSP, composition-conditioned or infilling), or None.
        xrd: `(L,)` float32 intensities on the model's 2θ grid, or None.
        xrd_source: Where `xrd` came from: the file path, or "array", with a SHA-256 prefix of the values.
        spacegroup: International space-group number 1..230, or None.
        prompt_formula: A formula named in the prompt (`formula_in_prompt`), used as `prompt_formula_use` says.
        prompt_formula_use: One of `PROMPT_FORMULA_USES` (module docstring).
        held: Composition whose atom types are held fixed through the reverse loop (a CSP model's composition, a
            composition given to a de novo model without a composition condition, the prompt's formula with
            "exact"), or None: types are drawn.
        elements: Chemical system the atom types are restricted to (sorted symbols), or None. A sampling
            constraint, not a model condition: the type logits of every other element are masked at every reverse
            step (`CrystalSampler`), so it works with any de novo model, conditioned or not.
        composition_first: Draw each crystal's reduced formula from the model's composition model, then hold it
            (module docstring); `held` stays None (the formulas differ per crystal).
        symmetry: Space-group numbers a crystal is held to through a symmetry template (`symmetry` request:
            a space group, a crystal system, or "prompt" for the crystal system the caption names), or None.
        symmetry_label: What was asked for ("tetragonal", "225"), for the record.
    """

    prompt: str | None = None
    properties: dict[str, float] | None = None
    composition: Any = None
    xrd: np.ndarray | None = None
    xrd_source: str | None = None
    spacegroup: int | None = None
    prompt_formula: Any = None
    elements: list[str] | None = None
    prompt_formula_use: str = "atoms"
    held: Any = None
    composition_first: bool = False
    symmetry: frozenset[int] | None = None
    symmetry_label: str | None = None

    def given(self) -> list[str]:
        """Names of the conditions this request fills ("composition" also for CSP models without that condition)."""
        values = {"text": self.prompt, "properties": self.properties, "xrd": self.xrd,
                  "composition": self.composition, "spacegroup": self.spacegroup}  # fmt: skip
        return [name for name, value in values.items() if value is not None]

    def record(self) -> dict[str, Any]:
        """JSON description, stored with every sample and in the run's request."""
        record = {
            "prompt": self.prompt,
            "properties": self.properties,
            "composition": None if self.composition is None else self.composition.formula.replace(" ", ""),
            "xrd": self.xrd_source,
            "spacegroup": self.spacegroup,
            "prompt_formula": None if self.prompt_formula is None else self.prompt_formula.reduced_formula,
        }
        if self.elements is not None:
            record["elements"] = self.elements
        if self.prompt_formula_use != "atoms":  # the default is left out, so older records read the same
            record["prompt_formula_use"] = self.prompt_formula_use
        if self.composition_first:
            record["composition_first"] = True
        if self.symmetry_label is not None:
            record["symmetry"] = self.symmetry_label
        return record


def parse_elements(elements: str | Sequence[str], num_elements: int = 100) -> list[str]:
    """Element symbols of a chemical system, sorted by Z, from "Li-Fe-P-O", "Li,Fe,P,O" or ["Li", "Fe", ...]."""
    from pymatgen.core import Element

    words = re.split(r"[-,\s]+", elements.strip()) if isinstance(elements, str) else [str(e).strip() for e in elements]
    words = [w for w in words if w]
    if not words:
        raise ValueError(f"elements {elements!r} names no element")
    found = []
    for word in words:
        try:
            element = Element(word)
        except ValueError:
            raise ValueError(f"elements {elements!r}: {word!r} is not an element symbol") from None
        if num_elements < element.Z:
            raise ValueError(f"elements {elements!r}: {word} (Z = {element.Z}) is beyond the model's {num_elements}")
        found.append(element)
    return [el.symbol for el in sorted(set(found), key=lambda el: el.Z)]


def parse_spacegroup(value: int | str) -> int:
    """International number 1..230 from a number ("225", 225) or a Hermann-Mauguin symbol ("Fm-3m", "P6_3/mmc")."""
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        number = int(text)
    else:
        from pymatgen.symmetry.groups import SpaceGroup

        try:
            number = int(SpaceGroup(text).int_number)
        except Exception:  # noqa: BLE001 - pymatgen raises ValueError/KeyError for unknown symbols
            raise ValueError(f"space group {value!r} is neither a number 1-230 nor a known symbol") from None
    if not 1 <= number <= 230:
        raise ValueError(f"space group number must lie in 1..230, got {number}")
    return number


def xrd_grid(model):
    """The `XRDConfig` of the patterns the model was trained on (recorded from the manifest at training time).

    Models trained before the grid was recorded fall back to the data pipeline's default 5-90° 2θ, Cu Kα,
    max-normalised grid with the XRD encoder's number of bins, with a warning.
    """
    from mmcrystal.modalities.xrd import XRDConfig

    recorded = (model.normalization or {}).get("xrd")
    if recorded:
        return XRDConfig(**recorded)
    bins = int(model.conditions.xrd_encoder.config.num_bins)
    log.warning("the model does not record its XRD grid; assuming 5-90° 2θ, Cu Kα, %d bins, max-normalised", bins)
    return XRDConfig(n_bins=bins)


def load_xrd_pattern(path: str | Path, model) -> np.ndarray:
    """A measured or simulated pattern file (any format `mmcrystal.modalities.xrd_io.read_pattern` reads) on the
    model's grid: wavelength converted if the file states another, SNIP background removed, resampled, normalised."""
    from mmcrystal.modalities.xrd_io import load_measured_pattern

    values, inside = load_measured_pattern(path, xrd_grid(model))
    if not inside.any():
        raise ValueError(f"{path}: the pattern does not overlap the model's 2θ grid")
    if inside.mean() < 0.5:
        log.warning("%s covers %.0f%% of the model's 2θ grid; the rest is zero", path, 100 * inside.mean())
    return values


def _fingerprint(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float32).tobytes()).hexdigest()[:16]


def _xrd(xrd, model) -> tuple[np.ndarray, str]:
    expected = int(model.conditions.xrd_encoder.config.num_bins)
    if isinstance(xrd, (str, Path)):
        values = load_xrd_pattern(xrd, model)
        return values, f"{xrd} (sha256:{_fingerprint(values)})"
    values = np.asarray(xrd.detach().cpu() if hasattr(xrd, "detach") else xrd, dtype=np.float32).reshape(-1)
    grid = (model.normalization or {}).get("xrd", {}).get("n_bins", expected)
    if values.size != grid:
        raise ValueError(f"an XRD array must have the model's {grid} grid points, got {values.size}; pass a file")
    return values, f"array (sha256:{_fingerprint(values)})"


def resolve_conditions(
    model,
    prompt: str | None = None,
    properties: Mapping[str, float] | None = None,
    composition: str | None = None,
    xrd=None,
    spacegroup: int | str | None = None,
    elements: str | Sequence[str] | None = None,
    prompt_formula: str = "atoms",
    composition_first: bool = False,
    symmetry: int | str | None = None,
) -> SampleConditions:
    """Validate a request against `model` (a `CrystalDiffusionModel`) and load what needs loading.

    `symmetry` holds each crystal to a space group through a template of a known crystal (`CrystalGenerator.
    templates`): a space group (225, "Fm-3m"), a crystal system ("tetragonal") or "prompt" (the crystal system the
    caption names; none named: unconstrained). It needs the atom types before the loop: `composition_first`, a held
    composition or `prompt_formula="exact"`.

    `elements` restricts the atom types to a chemical system ("Li-Fe-P-O"); a composition, or a formula the prompt
    names, must then lie inside it. `prompt_formula` says what a formula in the prompt does; `composition_first`
    draws each crystal's formula from the model's composition model (module docstring).

    Raises:
        ValueError: a condition the model was not trained with, an unknown property, an unparsable formula or
            space group, an XRD file that cannot be read, a CSP model without a composition, a composition
            outside the requested chemical system, or `composition_first` with a model without a composition model,
            a CSP model, an explicit composition or `prompt_formula="exact"`.
    """
    names, cfg = model.conditions.names, model.config.conditions
    csp = bool(model.config.diffusion.types.fixed_composition)
    given = {"text": prompt, "properties": properties, "xrd": xrd, "spacegroup": spacegroup}
    for name, value in given.items():
        if value is not None and name not in names:
            raise ValueError(f"this model was not trained with {name!r} conditions (it knows {list(names)})")
    out = SampleConditions(prompt=prompt)
    if properties:
        unknown = set(properties) - set(cfg.properties)
        if unknown:
            raise ValueError(f"unknown properties {sorted(unknown)}; the model knows {cfg.properties}")
        out.properties = {k: float(v) for k, v in properties.items()}
        if not all(math.isfinite(v) for v in out.properties.values()):
            raise ValueError(f"property targets must be finite, got {out.properties}")
    if prompt_formula not in PROMPT_FORMULA_USES:
        raise ValueError(f"prompt_formula must be one of {PROMPT_FORMULA_USES}, got {prompt_formula!r}")
    out.prompt_formula_use = prompt_formula
    if composition is not None:
        out.composition = parse_composition(composition, cfg.num_elements)
        if csp or "composition" not in names:  # CSP model, or a de novo model infilling the given types
            out.held = out.composition
    elif csp:
        raise ValueError("this is a crystal structure prediction model: pass a composition, e.g. 'SrTiO3'")
    if xrd is not None:
        out.xrd, out.xrd_source = _xrd(xrd, model)
    if spacegroup is not None:
        out.spacegroup = parse_spacegroup(spacegroup)
    if prompt and out.composition is None and prompt_formula != "ignore":
        out.prompt_formula = formula_in_prompt(prompt, cfg.num_elements)
    if elements is not None:
        out.elements = parse_elements(elements, cfg.num_elements)
        for what, comp in (("composition", out.composition), ("the formula in the prompt", out.prompt_formula)):
            outside = sorted({el.symbol for el in comp.elements} - set(out.elements)) if comp is not None else []
            if outside:
                raise ValueError(f"{what} {comp.reduced_formula} has {outside}, outside elements {out.elements}")
    if out.prompt_formula is not None and prompt_formula == "elements":
        out.elements = parse_elements([el.symbol for el in out.prompt_formula.elements], cfg.num_elements)
    elif out.prompt_formula is not None and prompt_formula == "exact":
        out.held = out.prompt_formula
    if composition_first:
        if getattr(model, "composition", None) is None:
            raise ValueError("composition_first needs a model trained with a composition model (composition.enabled)")
        if csp or composition is not None or prompt_formula == "exact":
            raise ValueError("composition_first draws the formula itself: it excludes a CSP model, an explicit "
                             "composition and prompt_formula='exact'")  # fmt: skip
        out.composition_first = True
    if symmetry is not None:
        from mmcrystal.generation.templates import crystal_system_in_prompt, spacegroups_of

        label = str(symmetry)
        if label.strip().lower() == "prompt":
            if not prompt:
                raise ValueError("symmetry='prompt' reads the crystal system from the prompt: give a prompt")
            named = crystal_system_in_prompt(prompt)
            label = named if named is not None else None
        if label is not None:
            if not out.composition_first and out.held is None:
                raise ValueError("symmetry holds atoms on a template's sites, so it needs the atom types first: "
                                 "composition_first, a composition, or prompt_formula='exact'")  # fmt: skip
            out.symmetry, out.symmetry_label = spacegroups_of(label), label
    return out


def parse_guidance(guidance: float | Mapping[str, float] | str) -> float | dict[str, float]:
    """One scale, or {condition: scale}, from a number, a mapping or their JSON text."""
    if isinstance(guidance, str):  # the CLI and JSON requests may carry '{"text": 3}' or '2.0'
        try:
            guidance = json.loads(guidance)
        except json.JSONDecodeError:
            raise ValueError(f"guidance {guidance!r} is neither a number nor a JSON mapping of scales") from None
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float, Mapping)):
        raise ValueError(f"guidance {guidance!r} is neither a number nor a mapping of scales")
    if isinstance(guidance, Mapping):
        return {str(k): float(v) for k, v in guidance.items()}
    return float(guidance)


def guidance_config(
    model, guidance: float | Mapping[str, float] | str, given: Sequence[str] | None = None
) -> GuidanceConfig:
    """Guidance of a request: one number scales all given conditions together (joint CFG); a mapping gives each
    condition its own scale (compositional CFG, see `mmcrystal.diffusion.guidance`), and given conditions it does
    not name get 1 (conditional, unguided). Conditions never dropped in training are kept in every term.

    Args:
        model: The `CrystalDiffusionModel`.
        guidance: A scale, a {condition: scale} mapping, or either as JSON text.
        given: Conditions the request gives (`SampleConditions.given()`); None: all of the model's.
    """
    names = model.conditions.names
    drop = model.config.conditions.drop_probs()
    always = [name for name in names if drop.get(name, 0.0) <= 0.0]
    scales = parse_guidance(guidance)
    if not isinstance(scales, dict):
        return GuidanceConfig(mode="joint", scale=scales, always=always)
    unknown = set(scales) - set(names)
    if unknown:
        raise ValueError(f"guidance for {sorted(unknown)}, which this model does not know (it knows {list(names)})")
    fixed = set(scales) & set(always)
    if fixed:
        raise ValueError(f"{sorted(fixed)} were never dropped in training, so they cannot be guided (always applied)")
    given = [name for name in (names if given is None else given) if name in names]
    absent = set(scales) - set(given)
    if absent:
        raise ValueError(f"guidance scales for {sorted(absent)}, but the request does not give them")
    full = {name: scales.get(name, 1.0) for name in given if name not in always}
    return GuidanceConfig(mode="per_condition", scales=full, always=always)
