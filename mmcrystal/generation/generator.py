"""`CrystalGenerator`: sample crystals from a trained `CrystalDiffusionModel` given a request.

    generator = CrystalGenerator.from_pretrained("runs/diffuse/pretrained")
    structures = generator.sample(prompt="a cubic perovskite oxide", n=16, steps=50, guidance=2.0)

Atoms per crystal, first rule that applies:
  1. `num_atoms` given by the user (one value, or one per crystal); with a composition it must be a whole number of
     formula units.
  2. An explicit `composition` (a CSP model's, or held fixed by a de novo model, see `conditions`): its atoms as written ("SrTiO3" -> 5, "Sr2Ti2O6" -> 10); write the cell formula or
     pass `num_atoms` for more formula units.
  3. Otherwise p(n) from the atom-count head given the condition (the training histogram without any condition).
     If the prompt names a formula (`conditions.formula_in_prompt`: "LiFePO4 in an orthorhombic cell"), p(n) is
     restricted to multiples of its formula size (7 for LiFePO4) up to the model's max_atoms and renormalised: a
     prose formula is reduced, while cells usually hold several formula units, and the head knows how many.
     With `composition_first`, each crystal's reduced formula is drawn first (`composition_seed(seed, i)`) from
     the composition model, and p(n) is restricted to multiples of that formula's size instead.
  4. A `symmetry` request replaces the count by its template's (`templates.TemplateLibrary.choose`, drawn with
     `template_seed(seed, i)`): the template crystal's standardised primitive cell fixes the atoms.
Each crystal's count is drawn with its own seed `sample_seed(seed, i)` (i: the global sample index); the reverse
loop of batch k (samples k B .. k B + B - 1) runs from `batch_seed(seed, k)`. So any batch can be regenerated alone,
and a run split over ranks by whole batches gives the same crystals as one process. (Noise is drawn per batch, not
per crystal, because the corruption processes take one generator per call: the crystals depend on `batch_size`.)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from mmcrystal.diffusion import Condition, CrystalSampler, GuidanceConfig, SampleBatch, SamplerConfig
from mmcrystal.diffusion.conditioning import ConditionInputs
from mmcrystal.diffusion.num_atoms import draw_num_atoms, restrict_to_multiples
from mmcrystal.generation.conditions import SampleConditions, guidance_config, resolve_conditions
from mmcrystal.generation.model import CrystalDiffusionModel
from mmcrystal.generation.templates import TemplateLibrary, describe

__all__ = [
    "CrystalGenerator",
    "batch_seed",
    "cell_atomic_numbers",
    "composition_seed",
    "formula_size",
    "sample_seed",
    "template_seed",
]

log = logging.getLogger(__name__)

# how composition_first draws formulas: temperature (0: the most likely token) and classifier-free guidance of the
# composition model's logits (1: plain conditional)
COMPOSITION_SAMPLING = {"temperature": 1.0, "guidance": 1.0}


def _derived_seed(tag: str, seed: int, index: int) -> int:
    digest = hashlib.sha256(f"{tag}:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch `index` of a run seeded `seed` (independent streams, any batch reproducible alone)."""
    return _derived_seed("mmcrystal-sample", seed, index)


def composition_seed(seed: int, index: int) -> int:
    """The seed of the composition-first formula of global sample `index` of a run seeded `seed`."""
    return _derived_seed("mmcrystal-composition", seed, index)


def template_seed(seed: int, index: int) -> int:
    """The seed of the symmetry template of global sample `index` of a run seeded `seed`."""
    return _derived_seed("mmcrystal-template", seed, index)


def sample_seed(seed: int, index: int) -> int:
    """The seed of the atom count of global sample `index` of a run seeded `seed`."""
    return _derived_seed("mmcrystal-num-atoms", seed, index)


def formula_size(comp) -> int:
    """Atoms per reduced formula unit of a pymatgen `Composition` (7 for LiFePO4)."""
    reduced, _ = comp.get_reduced_composition_and_factor()
    return int(round(reduced.num_atoms))


def cell_atomic_numbers(comp, num_atoms: int) -> list[int]:
    """Atomic numbers (sorted by Z) of a cell of `num_atoms` atoms with the composition's stoichiometry."""
    reduced, _ = comp.get_reduced_composition_and_factor()
    per_unit = formula_size(comp)
    if num_atoms % per_unit:
        raise ValueError(f"{num_atoms} atoms is not a whole number of {reduced.reduced_formula} formula units")
    units = num_atoms // per_unit
    return sorted(el.Z for el, amount in reduced.items() for _ in range(int(round(amount)) * units))


def _repeat(cond: Condition | None, size: int) -> Condition | None:
    if cond is None:
        return None
    return cond.expand(size) if cond.batch_size == 1 else cond


def _as_field_type(config: SamplerConfig, name: str, value):
    """`value` as the type of `config.name` (int steps, float rates; JSON and CLIs blur 0 and 0.0), or a clear error."""
    kind = type(getattr(config, name))
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise ValueError(f"sampler setting {name}={value!r} must be {'a whole number' if kind is int else 'a number'}")
    return kind(value)


class CrystalGenerator:
    """Samples crystals from a `CrystalDiffusionModel` given a prompt, properties, a composition, an XRD pattern or
    a space group (whichever the model was trained with).

    Args:
        model: The trained model (EMA denoiser weights, as `CrystalDiffusion.save_pretrained` writes them).
        device: Where to run.
    """

    def __init__(self, model: CrystalDiffusionModel, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        # SamplerConfig fields set over the step-count defaults, e.g. {"lattice_eta": 0.0} (the pre-2026-12 few-step
        # lattice) or {"corrector_steps": 0}: for sampler comparisons; recorded by the benchmark scripts
        self.sampler_settings: dict = {}
        # COMPOSITION_SAMPLING fields set over their defaults (`composition_sampling()`); recorded with the samples
        self.composition_settings: dict = {}
        # known crystals whose symmetry a `symmetry` request holds samples to (`mmcrystal.generation.templates`)
        self.templates: TemplateLibrary | None = None
        # samples that asked for a symmetry: how many got a template, how many found none (sampled free)
        self.template_counts = {"templated": 0, "no_template": 0}
        # the templates of the last batch (`templates.describe`: source id, space group, atoms; None: free)
        self.last_templates: list[dict | None] = []

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> CrystalGenerator:
        """Load a folder written by `CrystalDiffusion.save_pretrained` (no run folder, no network)."""
        from mmcrystal.pretrained import load_pretrained

        kind = json.loads((Path(folder) / "config.json").read_text()).get("kind")
        if kind != "CrystalDiffusionModel":
            raise ValueError(f"{folder} holds a {kind!r}, not a CrystalDiffusionModel")
        model, _ = load_pretrained(folder, CrystalDiffusionModel, map_location="cpu")
        return cls(model, device)

    @property
    def csp(self) -> bool:
        """Crystal structure prediction: the model keeps a given composition fixed."""
        return bool(self.model.config.diffusion.types.fixed_composition)

    @property
    def max_atoms(self) -> int:
        """Largest atom count of the model's training data (its atom-count head's range)."""
        return self.model.max_atoms

    def resolve(self, **request) -> SampleConditions:
        """`conditions.resolve_conditions` for this model (prompt, properties, composition, xrd, spacegroup)."""
        return resolve_conditions(self.model, **request)

    @torch.no_grad()
    def encode(self, conditions: SampleConditions | None = None, **request) -> Condition | None:
        """Condition tokens `(1, T, cond_dim)` of one request, or None when nothing is given (unconditional)."""
        conditions = conditions if conditions is not None else self.resolve(**request)
        return self.encode_many([conditions])

    @torch.no_grad()
    def encode_many(self, requests: Sequence[SampleConditions]) -> Condition | None:
        """Condition tokens `(R, T, cond_dim)` of R requests encoded together (text, compositions and so on padded
        to the longest), or None when no request gives a condition the model knows."""
        names, cfg = self.model.conditions.names, self.model.config.conditions
        if not requests or not any(set(r.given()) & set(names) for r in requests):
            return None
        b = len(requests)
        prompts = [r.prompt for r in requests]
        inputs = ConditionInputs(batch_size=b, captions=[p or "" for p in prompts],
                                 caption_mask=torch.tensor([p is not None for p in prompts]))  # fmt: skip
        if any(r.properties for r in requests):
            values = [r.properties or {} for r in requests]
            inputs.properties = torch.tensor([[float(v.get(p, 0.0)) for p in cfg.properties] for v in values])
            inputs.property_mask = torch.tensor([[p in v for p in cfg.properties] for v in values])
        patterns = [r.xrd for r in requests if r.xrd is not None]
        if patterns:
            inputs.xrd = torch.zeros(b, np.asarray(patterns[0]).size)
            for i, r in enumerate(requests):
                if r.xrd is not None:
                    inputs.xrd[i] = torch.as_tensor(np.asarray(r.xrd, dtype=np.float32).reshape(-1))
            inputs.xrd_mask = torch.tensor([r.xrd is not None for r in requests])
        if "composition" in names and any(r.composition is not None for r in requests):
            inputs.composition = torch.zeros(b, cfg.num_elements + 1)
            for i, r in enumerate(requests):
                for el, amount in (r.composition or {}).items():
                    inputs.composition[i, el.Z] = float(amount)
        if any(r.spacegroup is not None for r in requests):
            inputs.spacegroup = torch.tensor([int(r.spacegroup or 0) for r in requests])
        return self.model.condition(inputs)

    def allowed_types(self, conditions: SampleConditions) -> torch.Tensor | None:
        """`(num_classes,)` bool over element classes (Z - 1) of a request's chemical system, or None (any)."""
        if conditions.elements is None:
            return None
        from pymatgen.core import Element

        allowed = torch.zeros(self.model.diffusion.types.num_classes, dtype=torch.bool)
        allowed[[Element(symbol).Z - 1 for symbol in conditions.elements]] = True
        return allowed

    def atom_count_distribution(self, cond: Condition | None) -> torch.Tensor:
        """p(n) `(max_atoms,)` for n = 1..max_atoms: the head given `cond` (one request), else the histogram."""
        model = self.model
        if cond is not None and bool(cond.present().any()):
            return model.num_atoms.probs(cond.select(slice(0, 1))).reshape(-1).cpu()
        if model.atom_count_prior.numel():
            return model.atom_count_prior.cpu()
        # no histogram stored: the head's marginal (it was trained with every condition dropped too)
        pooled = torch.zeros(1, model.num_atoms.config.cond_dim, device=self.device)
        return torch.softmax(model.num_atoms(pooled), -1).reshape(-1).cpu()

    def composition_sampling(self) -> dict[str, float]:
        """`COMPOSITION_SAMPLING` with `composition_settings` over it; an unknown setting is a clear error."""
        unknown = sorted(set(self.composition_settings) - set(COMPOSITION_SAMPLING))
        if unknown:
            raise ValueError(f"composition settings {unknown} are not known; use {sorted(COMPOSITION_SAMPLING)}")
        settings = {**COMPOSITION_SAMPLING, **self.composition_settings}
        for key, value in settings.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"composition setting {key}={value!r} must be a number")
        return {k: float(v) for k, v in settings.items()}

    def formulas(
        self, requests: Sequence[SampleConditions], cond: Condition | None, indices: Sequence[int], seed: int
    ) -> list | None:
        """Reduced formulas (pymatgen `Composition`s, None for requests that are not `composition_first`) of global
        samples `indices`, sample i of request `requests[i]` with condition row i of `cond` (or its single row),
        all drawn from the composition model in one loop; None when no request is composition-first."""
        chosen = [i for i, r in enumerate(requests) if r.composition_first]
        if not chosen:
            return None
        from pymatgen.core import Composition, Element

        settings = self.composition_sampling()
        if cond is not None and cond.batch_size > 1:
            cond = cond.select(torch.tensor(chosen, device=cond.tokens.device))
        masks = [self.allowed_types(requests[i]) for i in chosen]
        every = torch.ones(self.model.diffusion.types.num_classes, dtype=torch.bool)
        allowed = None if all(m is None for m in masks) else torch.stack([every if m is None else m for m in masks])
        drawn = self.model.composition.sample(cond, [composition_seed(seed, indices[i]) for i in chosen],
                                              allowed_z=allowed, max_atoms=self.model.max_atoms, **settings)  # fmt: skip
        out: list = [None] * len(requests)
        for i, formula in zip(chosen, drawn, strict=True):
            if not formula:  # only when the chemical system leaves no element to draw
                raise ValueError(f"sample {indices[i]}: the composition model drew no element "
                                 f"(elements {requests[i].elements})")  # fmt: skip
            out[i] = Composition({Element.from_Z(z): count for z, count in formula.items()})
        return out

    @torch.no_grad()
    def sample_formulas(self, n: int = 16, seed: int = 0, **request) -> list:
        """The reduced formulas (pymatgen `Composition`s) that `sample(..., composition_first=True, n=n, seed=seed)`
        would hold, drawn from the composition model alone (no structure): a cheap look at what a prompt implies,
        and the composition-match benchmark over many prompts. `request`: prompt, properties, xrd, spacegroup,
        elements, as in `sample`."""
        conditions = self.resolve(**request, composition_first=True)
        return self.formulas([conditions] * n, self.encode(conditions), range(n), seed) or []

    def atom_counts(
        self,
        conditions: SampleConditions,
        cond: Condition | None,
        indices: Sequence[int],
        seed: int,
        given: Sequence[int] | None = None,
        formulas: Sequence | None = None,
    ) -> torch.Tensor:
        """`(len(indices),)` atom counts of global samples `indices` (rules in the module docstring); `formulas`
        (composition first, one per sample): each count a multiple of its formula's size."""
        comp = conditions.composition
        if given is not None:
            if formulas is not None:
                raise ValueError(
                    "composition_first draws the formula and the number of formula units: leave num_atoms unset"
                )
            counts = torch.tensor([int(c) for c in given], dtype=torch.long)
        elif formulas is not None:
            probs = self.atom_count_distribution(cond)
            counts = torch.cat([
                draw_num_atoms(restrict_to_multiples(probs, formula_size(f)), [sample_seed(seed, i)])
                for f, i in zip(formulas, indices, strict=True)
            ])  # fmt: skip
        elif comp is not None:
            counts = torch.full((len(indices),), int(round(comp.num_atoms)), dtype=torch.long)
        else:
            probs = self.atom_count_distribution(cond)
            if conditions.prompt_formula is not None:
                probs = restrict_to_multiples(probs, formula_size(conditions.prompt_formula))
            counts = draw_num_atoms(probs, [sample_seed(seed, i) for i in indices])
        if counts.numel() and int(counts.min()) < 1:
            raise ValueError(f"atom counts must be positive, got {counts.tolist()}")
        if counts.numel() and int(counts.max()) > self.model.max_atoms:
            log.warning("%d atoms is beyond the model's max_atoms=%d (outside its training data)",
                        int(counts.max()), self.model.max_atoms)  # fmt: skip
        if comp is not None:
            for n in counts.unique().tolist():
                cell_atomic_numbers(comp, n)  # raises if n is not a whole number of formula units
        return counts

    @staticmethod
    def _holding(requests: Sequence[SampleConditions], formulas: Sequence | None) -> list[SampleConditions]:
        """The requests with each composition-first sample's drawn formula as its held composition."""
        if formulas is None:
            return list(requests)
        return [r if f is None else replace(r, held=f) for r, f in zip(requests, formulas, strict=True)]

    def _fixed_types(
        self, requests: Sequence[SampleConditions], counts: torch.Tensor, templates: Sequence | None = None
    ) -> torch.Tensor | None:
        """`(sum counts,)` atomic numbers held fixed in the reverse loop: a templated crystal's template species
        (in template order), else each request's held composition (`SampleConditions.held`) at its cell size, 0
        (drawn) for the atoms of requests without one; None when no request holds types."""
        templates = templates or [None] * len(requests)
        if all(r.held is None for r in requests) and all(t is None for t in templates):
            return None
        numbers = []
        for r, c, t in zip(requests, counts.tolist(), templates, strict=True):
            if t is not None:
                numbers += t.species.tolist()
            else:
                numbers += [0] * c if r.held is None else cell_atomic_numbers(r.held, c)
        return torch.tensor(numbers, dtype=torch.long)

    def _templates(
        self,
        requests: Sequence[SampleConditions],
        formulas: Sequence | None,
        counts: torch.Tensor,
        indices: Sequence[int],
        seed: int,
    ) -> tuple[list | None, torch.Tensor]:
        """(one `SymmetryTemplate` or None per sample, atom counts with the templates' sizes) for requests with a
        `symmetry`; `(None, counts)` when none asks. A sample whose formula fits no template is sampled free and
        counted in `template_counts` (and logged)."""
        self.last_templates = []
        if all(r.symmetry is None for r in requests):
            return None, counts
        if self.templates is None:
            raise ValueError("a symmetry request needs known crystals to take templates from: set "
                             "generator.templates = TemplateLibrary.from_shards(<prepared data>, 'train')")  # fmt: skip
        formulas = formulas or [None] * len(requests)
        chosen, free = [], 0
        for r, f, i in zip(requests, formulas, indices, strict=True):
            formula = f if f is not None else r.held
            t = None
            if r.symmetry is not None:
                if formula is not None:
                    t = self.templates.choose(r.symmetry, formula, template_seed(seed, i), self.model.max_atoms)
                free += t is None
            chosen.append(t)
        self.last_templates = [describe(t) for t in chosen]
        asked = sum(r.symmetry is not None for r in requests)
        self.template_counts["templated"] += asked - free
        self.template_counts["no_template"] += free
        if free:
            log.warning("%d of %d samples asking for %s symmetry found no template for their formula; sampled "
                        "without symmetry", free, asked, requests[0].symmetry_label)  # fmt: skip
        counts = torch.tensor([c if t is None else t.num_atoms for c, t in zip(counts.tolist(), chosen, strict=True)],
                              dtype=torch.long)  # fmt: skip
        return chosen, counts

    def sampler(
        self,
        steps: int,
        guidance: float | Mapping[str, float] | GuidanceConfig,
        batch_size: int,
        conditions: SampleConditions | None = None,
    ) -> CrystalSampler:
        """The reverse loop: `SamplerConfig.few_step(steps)` below 100 steps, the full ancestral + corrector above.

        `guidance` is checked against `conditions` (`conditions.guidance_config`); without them every condition of
        the model counts as given."""
        if not isinstance(guidance, GuidanceConfig):
            guidance = guidance_config(self.model, guidance, None if conditions is None else conditions.given())
        kwargs = dict(batch_size=batch_size, guidance=guidance)
        config = SamplerConfig.few_step(steps, **kwargs) if steps < 100 else SamplerConfig(num_steps=steps, **kwargs)
        if self.sampler_settings:
            known = {f.name for f in fields(SamplerConfig)} - {"num_steps", "batch_size", "guidance"}
            unknown = sorted(set(self.sampler_settings) - known)
            if unknown:
                raise ValueError(f"sampler settings {unknown} are not SamplerConfig fields; use {sorted(known)}")
            config = replace(config, **{k: _as_field_type(config, k, v) for k, v in self.sampler_settings.items()})
        return CrystalSampler(self.model.denoiser, self.model.diffusion, config)

    @torch.no_grad()
    def batches(
        self,
        n: int,
        batch_size: int = 64,
        seed: int = 0,
        steps: int = 1000,
        guidance: float | Mapping[str, float] = 2.0,
        num_atoms: int | Sequence[int] | None = None,
        indices: Iterable[int] | None = None,
        conditions: SampleConditions | None = None,
        **request,
    ) -> Iterator[tuple[int, SampleBatch]]:
        """Yield `(batch_index, SampleBatch)` for the batches `indices` (default: all) of `n` samples in batches of
        `batch_size`. The request is `conditions`, or prompt / properties / composition / xrd / spacegroup."""
        if n < 1 or batch_size < 1 or steps < 1:
            raise ValueError(f"n, batch_size and steps must be positive, got {n}, {batch_size}, {steps}")
        conditions = conditions if conditions is not None else self.resolve(**request)
        cond = self.encode(conditions)
        given = [int(num_atoms)] * n if isinstance(num_atoms, (int, np.integer)) else num_atoms
        if given is not None and len(given) != n:
            raise ValueError(f"num_atoms has {len(given)} entries for n={n}")
        sampler = self.sampler(steps, guidance, batch_size, conditions)
        allowed = self.allowed_types(conditions)
        num_batches = -(-n // batch_size)
        for index in range(num_batches) if indices is None else indices:
            if not 0 <= index < num_batches:
                raise ValueError(f"batch {index} does not exist ({num_batches} batches of {batch_size})")
            lo, hi = index * batch_size, min((index + 1) * batch_size, n)
            chosen = None if given is None else given[lo:hi]
            formulas = self.formulas([conditions] * (hi - lo), cond, range(lo, hi), seed)
            counts = self.atom_counts(conditions, cond, range(lo, hi), seed, chosen, formulas)
            templates, counts = self._templates([conditions] * len(counts), formulas, counts, range(lo, hi), seed)
            types = self._fixed_types(self._holding([conditions] * len(counts), formulas), counts, templates)
            yield index, sampler.sample(counts, _repeat(cond, hi - lo), types, seed=batch_seed(seed, index),
                                        allowed_types=allowed, templates=templates)  # fmt: skip

    @torch.no_grad()
    def sample_requests(
        self,
        requests: Sequence[Mapping],
        steps: int = 1000,
        guidance: float | Mapping[str, float] = 2.0,
        seed: int = 0,
        batch_size: int = 64,
        callback: Callable[[list, int], None] | None = None,
    ) -> list:
        """One crystal per request, many requests in one reverse loop: a CSP benchmark's test compositions, a
        design loop's candidate targets, a list of prompts. Much faster than one `sample` call per request.

        Args:
            requests: Mappings with the keys of `sample` (prompt, properties, composition, xrd, spacegroup,
                elements, prompt_formula, composition_first) and optionally num_atoms (an int). All must give the same conditions, since one guidance
                setting serves the batch.
            steps, guidance, seed, batch_size, callback: As in `sample` (request i is global sample i: its atom
                count uses `sample_seed(seed, i)`, its batch k = i // batch_size runs from `batch_seed(seed, k)`).

        Returns:
            `len(requests)` pymatgen `Structure`s, in request order.
        """
        requests = [dict(r) for r in requests]
        counts_given = [r.pop("num_atoms", None) for r in requests]
        resolved = [self.resolve(**r) for r in requests]
        if not resolved:
            return []
        given = {tuple(r.given()) for r in resolved}
        if len(given) > 1:
            raise ValueError(f"requests give different conditions {sorted(given)}; sample each set separately")
        if steps < 1 or batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
        sampler = self.sampler(steps, guidance, batch_size, resolved[0])
        out = []
        for index, lo in enumerate(range(0, len(resolved), batch_size)):
            chunk = resolved[lo : lo + batch_size]
            cond = self.encode_many(chunk)
            conds = [None if cond is None else cond.select(slice(j, j + 1)) for j in range(len(chunk))]
            drawn = self.formulas(chunk, cond, range(lo, lo + len(chunk)), seed) or [None] * len(chunk)
            counts = torch.cat([
                self.atom_counts(r, conds[j], [lo + j], seed,
                                 None if counts_given[lo + j] is None else [counts_given[lo + j]],
                                 None if drawn[j] is None else [drawn[j]])
                for j, r in enumerate(chunk)
            ])  # fmt: skip
            templates, counts = self._templates(chunk, drawn, counts, range(lo, lo + len(chunk)), seed)
            types = self._fixed_types(self._holding(chunk, drawn), counts, templates)
            masks = [self.allowed_types(r) for r in chunk]
            allowed = None
            if any(m is not None for m in masks):
                every = torch.ones(self.model.diffusion.types.num_classes, dtype=torch.bool)
                allowed = torch.stack([every if m is None else m for m in masks])
            batch = sampler.sample(
                counts, cond, types, seed=batch_seed(seed, index), allowed_types=allowed, templates=templates
            )
            structures = batch.to_structures()
            if callback is not None:
                callback(structures, index)
            out += structures
        return out

    def sample(
        self,
        prompt: str | None = None,
        properties: dict[str, float] | None = None,
        composition: str | None = None,
        xrd=None,
        n: int = 16,
        steps: int = 1000,
        guidance: float | dict[str, float] = 2.0,
        num_atoms: int | list[int] | None = None,
        seed: int = 0,
        batch_size: int = 64,
        callback: Callable[[list, int], None] | None = None,
        spacegroup: int | str | None = None,
        elements: str | Sequence[str] | None = None,
        prompt_formula: str = "atoms",
        composition_first: bool = False,
        symmetry: int | str | None = None,
    ) -> list:
        """Generate `n` crystals as pymatgen `Structure`s.

        Args:
            prompt: A caption, e.g. "a cubic perovskite oxide" (text-conditioned models); a formula it names sets
                the atom count to a multiple of the formula (module docstring), and more with `prompt_formula`.
            properties: Target values in manifest units, e.g. {"band_gap": 1.5} (eV).
            composition: A formula, e.g. "SrTiO3"; its atoms as written set the cell size unless `num_atoms` does.
            xrd: A pattern file (.xy, .xye, .cif, ...: background removed, resampled onto the model's 2θ grid), or
                `(L,)` intensities already on that grid.
            n: Number of crystals.
            steps: Reverse steps (below 100: the few-step sampler).
            guidance: Classifier-free guidance: one scale for all conditions (0 unconditional, 1 conditional), or
                {condition: scale}, e.g. {"text": 3, "properties": 1.5} (unnamed given conditions: 1).
            num_atoms: Atoms per crystal (one value, or one per crystal); default: predicted.
            seed: Run seed; batch k uses `batch_seed(seed, k)`, the atom count of sample i `sample_seed(seed, i)`.
            batch_size: Crystals per reverse loop.
            callback: Called as `callback(structures, batch_index)` after each batch.
            spacegroup: International number or symbol, e.g. 225 or "Fm-3m" (space-group-conditioned models).
            elements: Chemical system, e.g. "Li-Fe-P-O" or ["Li", "Fe", "P", "O"]: atom types are drawn only from
                these elements (any model; a subset may appear in a crystal).
            prompt_formula: What a formula in the prompt does: "atoms" (the atom count only; the text decides the
                types), "elements" (types drawn from its elements), "exact" (types held at the formula: structure
                prediction by infilling) or "ignore" (see `conditions`).
            composition_first: Draw each crystal's reduced formula from the model's composition model given the
                conditions (`composition_settings`: temperature, guidance), then denoise the structure with those
                types held (models trained with `composition.enabled`).
            symmetry: Hold each crystal to a space group (225, "Fm-3m"), a crystal system ("cubic") or the crystal
                system the prompt names ("prompt") through a template from `self.templates`
                (`mmcrystal.generation.templates`); needs `composition_first` or held types.
        """
        conditions = self.resolve(prompt=prompt, properties=properties, composition=composition, xrd=xrd,
                                  spacegroup=spacegroup, elements=elements, prompt_formula=prompt_formula,
                                  composition_first=composition_first, symmetry=symmetry)  # fmt: skip
        out = []
        for index, batch in self.batches(n, batch_size, seed, steps, guidance, num_atoms, conditions=conditions):
            structures = batch.to_structures()
            if callback is not None:
                callback(structures, index)
            out += structures
        return out
