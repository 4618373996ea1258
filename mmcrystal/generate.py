"""Generate crystals with a trained conditional decoder: `CrystalGenerator` and the `mmcrystal sample` command.

    generator = CrystalGenerator.from_pretrained("runs/diffuse/pretrained")
    structures = generator.sample(prompt="a cubic perovskite oxide", n=16, steps=50, guidance=2.0)

The atom count of each crystal comes from the user (`num_atoms`), else from the composition (its formula as
written), else from the atom-count head given the condition, else from the training histogram. `CrystalSampler`
runs the reverse loop. Batch k is drawn from its own seed `batch_seed(seed, k)`, so any batch can be regenerated
alone: `mmcrystal sample` streams finished batches to disk and an interrupted run resumes where it stopped, with
the same structures as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmcrystal.config import register_config
from mmcrystal.diffusion import (
    Condition,
    CrystalDenoiser,
    CrystalSampler,
    DenoiserConfig,
    DiffusionConfig,
    GuidanceConfig,
    JointDiffusion,
    LatticeNormalization,
    NumAtomsConfig,
    NumAtomsPredictor,
    SampleBatch,
    SamplerConfig,
    histogram_prior,
    sample_num_atoms,
)
from mmcrystal.diffusion.conditioning import ConditionConfig, ConditionEncoder, ConditionInputs

__all__ = [
    "CrystalDiffusionModel",
    "CrystalGenerator",
    "DiffusionModelConfig",
    "batch_seed",
    "model_fingerprint",
    "normalization_from_manifest",
    "sample",
    "SampleWriter",
    "write_samples",
]

log = logging.getLogger(__name__)


@register_config
@dataclass
class DiffusionModelConfig:
    """Everything that rebuilds a trained conditional decoder (the `config.json` of a pretrained folder).

    Attributes:
        denoiser: The network (`cond_dim` and `num_classes` are synchronised with `conditions` and `diffusion`).
        diffusion: The three corruption processes.
        conditions: The condition encoder.
        num_atoms: The atom-count head (`cond_dim` synchronised with `conditions`).
        normalization: Dataset statistics as plain JSON (`normalization_from_manifest`): "lattice"
            (`LatticeNormalization` fields), "properties" ({name: {mean, std}}) and "num_atoms_histogram".
    """

    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    conditions: ConditionConfig = field(default_factory=ConditionConfig)
    num_atoms: NumAtomsConfig = field(default_factory=NumAtomsConfig)
    normalization: dict[str, Any] | None = None


def normalization_from_manifest(manifest: dict) -> dict[str, Any]:
    """Lattice, property and atom-count statistics of a prepared dataset's reference (training) split."""
    lattice = LatticeNormalization.from_manifest(manifest)
    reference = manifest["normalization"].get("reference_split") or "train"
    properties = {
        name: {"mean": float(s["mean"]), "std": float(s["std"])}
        for name, s in manifest["normalization"].get("properties", {}).items()
        if "mean" in s
    }
    return {
        "lattice": {f.name: [float(v) for v in getattr(lattice, f.name)] for f in fields(lattice)},
        "properties": properties,
        "num_atoms_histogram": dict(manifest.get("stats", {}).get(reference, {}).get("num_atoms_histogram", {})),
    }


def _synchronised(cfg: DiffusionModelConfig) -> DiffusionModelConfig:
    width, classes = cfg.conditions.cond_dim, cfg.diffusion.types.num_classes
    return replace(
        cfg,
        denoiser=replace(cfg.denoiser, cond_dim=width, num_classes=classes),
        num_atoms=replace(cfg.num_atoms, cond_dim=width),
    )


class CrystalDiffusionModel(nn.Module):
    """Condition encoder + denoiser + atom-count head + the diffusion processes, with the dataset statistics.

    Args:
        config: `DiffusionModelConfig`.
    """

    def __init__(self, config: DiffusionModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = _synchronised(config or DiffusionModelConfig())
        self.conditions = ConditionEncoder(cfg.conditions)
        self.denoiser = CrystalDenoiser(cfg.denoiser)
        self.num_atoms = NumAtomsPredictor(cfg.num_atoms)
        self.diffusion = JointDiffusion(cfg.diffusion)
        self.register_buffer("atom_count_prior", torch.zeros(0), persistent=False)
        if cfg.normalization is not None:
            self.set_normalization(cfg.normalization)

    @property
    def normalization(self) -> dict[str, Any] | None:
        return self.config.normalization

    def set_normalization(self, normalization: dict[str, Any]) -> None:
        """Adopt dataset statistics (lattice standardisation, property standardisation, atom-count histogram)."""
        self.config = replace(self.config, normalization=normalization)
        lattice = LatticeNormalization(**{k: tuple(v) for k, v in normalization["lattice"].items()})
        self.diffusion = JointDiffusion(self.config.diffusion, lattice).to(self.atom_count_prior.device)
        if "properties" in self.conditions.names:
            self.conditions.set_property_stats(normalization.get("properties", {}))
        histogram = normalization.get("num_atoms_histogram") or {}
        prior = histogram_prior(histogram, self.config.num_atoms.max_atoms) if histogram else torch.zeros(0)
        self.atom_count_prior = prior.to(self.atom_count_prior.device)

    def export_config(self) -> DiffusionModelConfig:
        """The config of a self-contained folder (aligned encoders inlined, see `ConditionEncoder.export_config`)."""
        return replace(self.config, conditions=self.conditions.export_config())

    def condition(self, inputs: ConditionInputs) -> Condition | None:
        """Condition tokens of B samples, or None for an unconditional model."""
        return self.conditions(inputs)


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch `index` of a run seeded `seed` (independent streams, any batch reproducible alone)."""
    digest = hashlib.sha256(f"mmcrystal-sample:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def _repeat(cond: Condition | None, size: int) -> Condition | None:
    if cond is None:
        return None
    return Condition(cond.tokens.expand(size, -1, -1), cond.mask.expand(size, -1), cond.groups, cond.names)


def _guidance(guidance: float | dict[str, float]) -> GuidanceConfig:
    if isinstance(guidance, dict):
        return GuidanceConfig(mode="per_condition", scales={k: float(v) for k, v in guidance.items()})
    return GuidanceConfig(scale=float(guidance))


def _composition(formula: str | None):
    if formula is None:
        return None
    from pymatgen.core import Composition

    comp = Composition(formula)
    if any(abs(a - round(a)) > 1e-6 for a in comp.values()) or comp.num_atoms < 1:
        raise ValueError(f"composition {formula!r} must have whole numbers of atoms")
    return comp


def _cell_numbers(comp, num_atoms: int) -> list[int]:
    """Atomic numbers (sorted by Z) of a cell of `num_atoms` atoms with the composition's stoichiometry."""
    reduced, _ = comp.get_reduced_composition_and_factor()
    per_unit = int(round(reduced.num_atoms))
    if num_atoms % per_unit:
        raise ValueError(f"{num_atoms} atoms is not a whole number of {reduced.reduced_formula} formula units")
    units = num_atoms // per_unit
    return sorted(el.Z for el, amount in reduced.items() for _ in range(int(round(amount)) * units))


class CrystalGenerator:
    """Samples crystals from a `CrystalDiffusionModel` given a prompt, properties, a composition or an XRD pattern.

    Args:
        model: The trained model (EMA denoiser weights, as `CrystalDiffusion.save_pretrained` writes them).
        device: Where to run.
    """

    def __init__(self, model: CrystalDiffusionModel, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

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

    @torch.no_grad()
    def encode(self, prompt=None, properties=None, composition=None, xrd=None, spacegroup=None) -> Condition | None:
        """Condition tokens `(1, T, cond_dim)` of one request, or None when nothing is given (unconditional)."""
        names, cfg = self.model.conditions.names, self.model.config.conditions
        given = {"text": prompt, "properties": properties, "xrd": xrd, "spacegroup": spacegroup}
        for name, value in given.items():
            if value is not None and name not in names:
                raise ValueError(f"this model is not conditioned on {name!r} (it knows {list(names)})")
        comp = _composition(composition)
        if comp is not None and "composition" not in names and not self.csp:
            raise ValueError(f"this model is neither a CSP model nor conditioned on a composition ({list(names)})")
        if all(v is None for v in given.values()) and (comp is None or "composition" not in names):
            return None
        inputs = ConditionInputs(batch_size=1, captions=[prompt or ""], caption_mask=torch.tensor([prompt is not None]))
        if properties:
            unknown = set(properties) - set(cfg.properties)
            if unknown:
                raise ValueError(f"unknown properties {sorted(unknown)}; the model knows {cfg.properties}")
            inputs.properties = torch.tensor([[float(properties.get(p, 0.0)) for p in cfg.properties]])
            inputs.property_mask = torch.tensor([[p in properties for p in cfg.properties]])
        if xrd is not None:
            inputs.xrd, inputs.xrd_mask = torch.as_tensor(xrd, dtype=torch.float32).reshape(1, -1), torch.tensor([True])
        if comp is not None:
            inputs.composition = torch.zeros(1, cfg.num_elements + 1)
            for el, amount in comp.items():
                inputs.composition[0, el.Z] = float(amount)
        if spacegroup is not None:
            inputs.spacegroup = torch.tensor([int(spacegroup)])
        return self.model.condition(inputs)

    def _num_atoms(self, cond, comp, size: int, given: Sequence[int] | None, gen: torch.Generator) -> torch.Tensor:
        model = self.model
        if given is not None:
            counts = torch.tensor(list(given), dtype=torch.long)
        elif comp is not None:
            counts = torch.full((size,), int(round(comp.num_atoms)), dtype=torch.long)
        elif cond is not None:  # every row holds the same request: one distribution, `size` draws
            counts = sample_num_atoms(model.num_atoms.probs(cond.select(slice(0, 1))).cpu()[0], size, generator=gen)
        elif model.atom_count_prior.numel():
            counts = sample_num_atoms(model.atom_count_prior.cpu(), size, generator=gen)
        else:  # no histogram stored: the head's marginal (it was trained with every condition dropped too)
            pooled = torch.zeros(1, model.num_atoms.config.cond_dim, device=self.device)
            counts = sample_num_atoms(torch.softmax(model.num_atoms(pooled), -1).cpu(), size, generator=gen)
        if comp is not None:
            for n in counts.tolist():
                _cell_numbers(comp, n)  # raises if n is not a whole number of formula units
        return counts

    def sampler(self, steps: int, guidance: float | dict[str, float], batch_size: int) -> CrystalSampler:
        """The reverse loop: `SamplerConfig.few_step(steps)` below 100 steps, the full ancestral + corrector above."""
        kwargs = dict(batch_size=batch_size, guidance=_guidance(guidance))
        config = SamplerConfig.few_step(steps, **kwargs) if steps < 100 else SamplerConfig(num_steps=steps, **kwargs)
        return CrystalSampler(self.model.denoiser, self.model.diffusion, config)

    @torch.no_grad()
    def batches(
        self,
        n: int,
        batch_size: int = 64,
        seed: int = 0,
        steps: int = 1000,
        guidance: float | dict[str, float] = 2.0,
        num_atoms: int | Sequence[int] | None = None,
        skip: Sequence[int] = (),
        **conditions,
    ) -> Iterator[tuple[int, SampleBatch]]:
        """Yield `(batch_index, SampleBatch)` for batches of `batch_size` (indices in `skip` are not generated).

        `conditions`: prompt, properties, composition, xrd, spacegroup (see `sample`).
        """
        if n < 1 or batch_size < 1:
            raise ValueError(f"n and batch_size must be positive, got {n}, {batch_size}")
        if self.csp and conditions.get("composition") is None:
            raise ValueError("this is a crystal structure prediction model: pass a composition, e.g. 'SrTiO3'")
        cond = self.encode(**conditions)
        comp = _composition(conditions.get("composition"))
        given = [int(num_atoms)] * n if isinstance(num_atoms, int) else num_atoms
        if given is not None and len(given) != n:
            raise ValueError(f"num_atoms has {len(given)} entries for n={n}")
        sampler = self.sampler(steps, guidance, batch_size)
        for index, lo in enumerate(range(0, n, batch_size)):
            if index in skip:
                continue
            size, seed_k = min(batch_size, n - lo), batch_seed(seed, index)
            chunk = _repeat(cond, size)
            gen = torch.Generator().manual_seed(seed_k)
            counts = self._num_atoms(chunk, comp, size, None if given is None else given[lo : lo + size], gen)
            types = None
            if self.csp:
                types = torch.tensor([z for c in counts.tolist() for z in _cell_numbers(comp, c)], dtype=torch.long)
            yield index, sampler.sample(counts, chunk, types, seed=seed_k)

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
        spacegroup: int | None = None,
    ) -> list:
        """Generate `n` crystals as pymatgen `Structure`s.

        Args:
            prompt: A caption, e.g. "a cubic perovskite oxide" (text-conditioned models).
            properties: Target values in manifest units, e.g. {"band_gap": 1.5} (eV).
            composition: A formula, e.g. "SrTiO3"; its atoms as written set the cell size unless `num_atoms` does.
            xrd: `(L,)` intensities on the XRD encoder's 2θ grid.
            n: Number of crystals.
            steps: Reverse steps (below 100: the few-step sampler).
            guidance: Classifier-free guidance scale (0 unconditional, 1 conditional), or one scale per condition.
            num_atoms: Atoms per crystal (one value, or one per crystal); default: predicted.
            seed: Run seed; batch k uses `batch_seed(seed, k)`.
            batch_size: Crystals per reverse loop.
            callback: Called as `callback(structures, batch_index)` after each batch.
            spacegroup: International space-group number (space-group-conditioned models).
        """
        out = []
        conditions = dict(prompt=prompt, properties=properties, composition=composition, xrd=xrd, spacegroup=spacegroup)
        for index, batch in self.batches(n, batch_size, seed, steps, guidance, num_atoms, **conditions):
            structures = batch.to_structures()
            if callback is not None:
                callback(structures, index)
            out += structures
        return out


# ----------------------------------------------------------------------------------------------- streaming to disk
def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> dict[str, dict]:
    records = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by an interruption
            continue
        records[record["id"]] = record
    return records


class SampleWriter:
    """The folder of one sample run: `cif/<id>.cif`, `extxyz/batch_<k>.extxyz`, `samples.jsonl`, `progress.json`.

    A batch counts as done when its extxyz (written last), all its CIFs and all its metadata lines exist. Opening
    a folder again keeps the done batches and drops the metadata of half-written ones, so they can be regenerated.

    Args:
        out: The folder.
        request: JSON-able description of the run; a folder refuses a different request.
        n: Number of crystals.
        batch_size: Crystals per batch.
    """

    def __init__(self, out: str | Path, request: dict, n: int, batch_size: int) -> None:
        self.out = Path(out)
        for sub in ("cif", "extxyz"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.request = json.loads(json.dumps(request))
        self.progress_path, self.meta_path = self.out / "progress.json", self.out / "samples.jsonl"
        if self.progress_path.exists() and json.loads(self.progress_path.read_text())["request"] != self.request:
            raise ValueError(f"{self.out} holds samples of another request (see progress.json); use a new folder")
        self.num_batches = -(-n // batch_size)
        self.ids = [[f"sample_{i:06d}" for i in range(lo, min(lo + batch_size, n))] for lo in range(0, n, batch_size)]
        records = _read_jsonl(self.meta_path)
        self.done = {k for k in range(self.num_batches) if self._complete(k, records)}
        self._rewrite_metadata(records)
        self.report(finished=False)

    def extxyz(self, k: int) -> Path:
        return self.out / "extxyz" / f"batch_{k:05d}.extxyz"

    def _complete(self, k: int, records: dict) -> bool:
        files = [self.extxyz(k)] + [self.out / "cif" / f"{sid}.cif" for sid in self.ids[k]]
        return all(p.exists() for p in files) and all(sid in records for sid in self.ids[k])

    def _rewrite_metadata(self, records: dict) -> None:
        lines = [json.dumps(records[sid]) + "\n" for k in sorted(self.done) for sid in self.ids[k]]
        _atomic_write(self.meta_path, "".join(lines))

    def write(self, k: int, structures: list, metadata: list[dict]) -> None:
        """CIFs, then the metadata lines, then the batch's extxyz (its presence marks the batch as written)."""
        from ase.io import write
        from pymatgen.io.ase import AseAtomsAdaptor
        from pymatgen.io.cif import CifWriter

        atoms = []
        for sid, structure in zip(self.ids[k], structures, strict=True):
            _atomic_write(self.out / "cif" / f"{sid}.cif", str(CifWriter(structure)))
            atoms.append(AseAtomsAdaptor.get_atoms(structure))
            atoms[-1].info["id"] = sid
        with self.meta_path.open("a") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in metadata)
        tmp = self.extxyz(k).with_name(self.extxyz(k).name + ".tmp")
        write(str(tmp), atoms, format="extxyz")
        os.replace(tmp, self.extxyz(k))
        self.done.add(k)
        self.report(finished=False)

    def report(self, finished: bool) -> dict:
        """Write and return `progress.json`."""
        summary = dict(request=self.request, out=str(self.out), num_batches=self.num_batches,
                       batches_done=sorted(self.done), samples_done=sum(len(self.ids[k]) for k in self.done),
                       complete=finished)  # fmt: skip
        _atomic_write(self.progress_path, json.dumps(summary, indent=1))
        return summary

    def finish(self) -> dict:
        """Sort the metadata by id and mark the run complete."""
        self._rewrite_metadata(_read_jsonl(self.meta_path))
        return self.report(finished=len(self.done) == self.num_batches)


def write_samples(
    generator: CrystalGenerator,
    out: str | Path,
    prompt: str | None = None,
    properties: dict[str, float] | None = None,
    composition: str | None = None,
    n: int = 64,
    batch_size: int = 64,
    seed: int = 0,
    steps: int = 1000,
    guidance: float = 2.0,
    num_atoms: int | None = None,
    model_id: str | None = None,
    callback: Callable[[list, int], None] | None = None,
) -> dict:
    """Stream samples to `out` batch by batch (see `SampleWriter`); a rerun regenerates only missing batches, each
    from its own seed, so the result equals an uninterrupted run. Arguments as in `sample`; `callback(structures,
    batch_index)` runs after each batch is on disk."""
    conditions = dict(prompt=prompt, properties=properties, composition=composition)
    request = dict(model=model_id, n=n, batch_size=batch_size, seed=seed, steps=steps, guidance=guidance,
                   num_atoms=num_atoms, **conditions)  # fmt: skip
    writer = SampleWriter(out, request, n, batch_size)
    skipped = sorted(writer.done)
    for k, batch in generator.batches(n, batch_size, seed, steps, guidance, num_atoms, skip=skipped, **conditions):
        structures = batch.to_structures()
        metadata = [
            dict(id=sid, batch=k, prompt=prompt, conditions=dict(properties=properties, composition=composition),
                 seed=seed, batch_seed=batch_seed(seed, k), steps=steps, guidance=guidance, num_atoms=len(s),
                 formula=s.composition.reduced_formula, cif=f"cif/{sid}.cif", extxyz=f"extxyz/{writer.extxyz(k).name}")
            for sid, s in zip(writer.ids[k], structures, strict=True)
        ]  # fmt: skip
        writer.write(k, structures, metadata)
        log.info("sample: batch %d/%d -> %s", k + 1, writer.num_batches, out)
        if callback is not None:
            callback(structures, k)
    return {**writer.finish(), "skipped_batches": skipped}


def model_fingerprint(folder: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a pretrained folder's weights (recorded with every sample run)."""
    digest = hashlib.sha256()
    with (Path(folder) / "model.safetensors").open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def sample(
    model: str,
    out: str,
    prompt: str | None = None,
    properties: dict[str, float] | None = None,
    composition: str | None = None,
    n: int = 64,
    steps: int = 1000,
    guidance: float = 2.0,
    num_atoms: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
) -> dict:
    """Generate crystals with a trained decoder and stream them to disk; a rerun resumes an interrupted run.

    Writes `OUT/cif/<id>.cif`, one `OUT/extxyz/batch_<k>.extxyz` per batch, `OUT/samples.jsonl` (id, prompt,
    conditions, seed, steps, guidance, formula per crystal) and `OUT/progress.json`.

    Args:
        model: A folder written by `CrystalDiffusion.save_pretrained` (e.g. `<run>/pretrained`).
        out: Output folder (reuse it to resume).
        prompt: Caption to condition on, e.g. "a cubic perovskite oxide".
        properties: Target properties in manifest units, e.g. '{"band_gap": 1.5}'.
        composition: Formula, e.g. SrTiO3 (crystal structure prediction or composition-conditioned models).
        n: Number of crystals.
        steps: Reverse-diffusion steps (below 100: the few-step sampler).
        guidance: Classifier-free guidance scale (0 unconditional, 1 conditional).
        num_atoms: Atoms per crystal; default: predicted from the condition (or the composition).
        seed: Run seed (the same seed gives the same crystals).
        batch_size: Crystals per batch (one file write per batch).
        device: "cpu" or "cuda".
    """
    generator = CrystalGenerator.from_pretrained(model, device)
    return write_samples(generator, out, n=n, batch_size=batch_size, seed=seed, steps=steps, guidance=guidance,
                         num_atoms=num_atoms, model_id=model_fingerprint(model), prompt=prompt,
                         properties=properties, composition=composition)  # fmt: skip
