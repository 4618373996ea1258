"""`mmcrystal sample`: generate crystals with a trained decoder and stream them to disk, on one process or many.

    mmcrystal sample --model <run>/pretrained --out runs/samples --prompt "a cubic perovskite oxide" --n 64
    torchrun --nproc_per_node 4 -m -- mmcrystal sample --model ... --out runs/samples --n 4096 --device cuda
    srun --ntasks 8 mmcrystal sample --model ... --out runs/samples --n 4096 --device cuda
    mmcrystal sample --merge runs/samples          # merge the rank shards by hand (see distributed.py)

(The `--` stops torchrun from reading `--n` as an abbreviation of its own options.)

`write_samples` is the loop behind it, for a `CrystalGenerator` already in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mmcrystal.generation.distributed import (
    SHARDS,
    RankInfo,
    device_for_rank,
    finished_batches,
    merge_shards,
    rank_batches,
    rank_info,
    shard_folder,
    wait_for_batches,
)
from mmcrystal.generation.generator import CrystalGenerator, batch_seed
from mmcrystal.generation.model import model_fingerprint
from mmcrystal.generation.writer import SampleWriter, write_manifest

__all__ = ["sample", "write_samples"]

log = logging.getLogger(__name__)


def _metadata(
    writer: SampleWriter, k: int, structures: list, request: dict, conditions: dict, templates: Sequence = ()
) -> list[dict]:
    seed, batch_size = request["seed"], request["batch_size"]
    rows = [
        dict(id=sid, index=k * batch_size + j, batch=k, prompt=conditions["prompt"], conditions=conditions, seed=seed,
             batch_seed=batch_seed(seed, k), steps=request["steps"], guidance=request["guidance"], num_atoms=len(s),
             formula=s.composition.reduced_formula, cif=f"cif/{sid}.cif", extxyz=f"extxyz/{writer.extxyz(k).name}")
        for j, (sid, s) in enumerate(zip(writer.ids[k], structures, strict=True))
    ]  # fmt: skip
    for row, template in zip(rows, templates, strict=False):  # symmetry requests: which crystal's skeleton
        row["template"] = template
    return rows


def write_samples(
    generator: CrystalGenerator,
    out: str | Path,
    n: int = 64,
    batch_size: int = 64,
    seed: int = 0,
    steps: int = 1000,
    guidance: float | Mapping[str, float] = 2.0,
    num_atoms: int | Sequence[int] | None = None,
    model_id: str | None = None,
    callback: Callable[[list, int], None] | None = None,
    rank: RankInfo | None = None,
    merge_wait: float = 3600.0,
    **request,
) -> dict:
    """Stream samples to `out` batch by batch (see writer.py); a rerun regenerates only missing batches, each from
    its own seed, so the result equals an uninterrupted run. Under several ranks (`rank`, default from the
    environment) each writes its shard and rank 0 merges (distributed.py).

    Args:
        generator: The loaded model.
        out: Output folder.
        n, batch_size, seed, steps, guidance, num_atoms: As in `CrystalGenerator.sample`.
        model_id: Fingerprint of the model, recorded in the request (a folder refuses another model).
        callback: `callback(structures, batch_index)` after each batch is on disk.
        rank: This process's rank; default `rank_info()` (torchrun / SLURM variables).
        merge_wait: Seconds rank 0 waits for the other ranks' batches before merging what is there.
        **request: prompt, properties, composition, xrd, spacegroup, elements, prompt_formula, composition_first,
            symmetry.

    Returns:
        The progress summary of OUT (rank 0 / one process) or of the rank's shard, plus "skipped_batches" (the
        batches of this process that were already on disk).
    """
    from mmcrystal.generation.conditions import parse_guidance

    info = rank or rank_info()
    conditions = generator.resolve(**request)
    guidance = parse_guidance(guidance)
    record = conditions.record()
    run = dict(model=model_id, n=n, batch_size=batch_size, seed=seed, steps=steps, guidance=guidance,
               num_atoms=list(num_atoms) if isinstance(num_atoms, Sequence) else num_atoms, **record)  # fmt: skip
    if generator.sampler_settings:  # only when set, so folders written without it still resume
        run["sampler"] = dict(generator.sampler_settings)
    if conditions.composition_first:
        run["composition_sampling"] = generator.composition_sampling()
    if conditions.symmetry is not None and generator.templates is not None:
        from mmcrystal.diffusion import SamplerConfig

        run["templates"] = generator.templates.source
        run["template_start"] = float(generator.sampler_settings.get("template_start", SamplerConfig.template_start))
    out = Path(out)
    if info.world_size == 1:
        if (out / SHARDS).exists():  # batches finished by an earlier multi-rank run of the same request
            merge_shards(out, run)
        writer = SampleWriter(out, run)
        mine, finished = list(range(writer.num_batches)), writer.done
    else:
        finished = set(finished_batches(out, run))  # also refuses folders of another request
        mine = rank_batches(-(-n // batch_size), info)
        extra = dict(rank=info.rank, world_size=info.world_size)
        writer = SampleWriter(shard_folder(out, info), run, batches=mine, extra=extra)
    todo = [k for k in mine if k not in finished]
    skipped = sorted(set(mine) - set(todo))
    batches = generator.batches(n, batch_size, seed, steps, guidance, num_atoms, indices=todo, conditions=conditions)
    for k, batch in batches:
        structures = batch.to_structures()
        meta = _metadata(writer, k, structures, writer.request, record, generator.last_templates)
        writer.write(k, structures, meta)
        log.info("sample: batch %d/%d (rank %d of %d) -> %s", k + 1, writer.num_batches, info.rank,
                 info.world_size, writer.out)  # fmt: skip
        if callback is not None:
            callback(structures, k)
    summary = writer.finish()
    if info.world_size == 1:
        if (out / SHARDS).exists():  # record the adopted batches and remove the shards they came from
            return {**merge_shards(out, writer.request), "skipped_batches": skipped}
        write_manifest(writer)
        return {**summary, "skipped_batches": skipped}
    if info.rank != 0:
        return {**summary, "skipped_batches": skipped}
    missing = wait_for_batches(out, writer.request, merge_wait)
    if missing:
        log.warning("sample: batches %s are not finished after %.0f s; merging the others (rerun the missing ranks, "
                    "then `mmcrystal sample --merge %s`)", missing, merge_wait, out)  # fmt: skip
    return {**merge_shards(out, writer.request), "skipped_batches": skipped}


def sample(
    model: str | None = None,
    out: str | None = None,
    prompt: str | None = None,
    properties: dict[str, float] | None = None,
    composition: str | None = None,
    xrd: str | None = None,
    spacegroup: int | str | None = None,
    elements: str | None = None,
    prompt_formula: str = "atoms",
    composition_first: bool = False,
    composition_sampling: dict | None = None,
    symmetry: int | str | None = None,
    templates: str | None = None,
    num_atoms: int | list[int] | None = None,
    n: int = 64,
    steps: int = 1000,
    guidance: float | dict[str, float] = 2.0,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    sampler: dict | None = None,
    merge: str | None = None,
    merge_wait: float = 3600.0,
) -> dict:
    """Generate crystals with a trained decoder and stream them to disk; a rerun resumes an interrupted run.

    Writes `OUT/cif/<id>.cif`, one `OUT/extxyz/batch_<k>.extxyz` per batch, `OUT/samples.jsonl` (id, conditions,
    seeds, steps, guidance, formula per crystal), `OUT/progress.json` and `OUT/manifest.json`. Under torchrun or
    srun every rank writes a shard `OUT/shards/rank<r>-of<W>/` and rank 0 merges them into OUT; the crystals are
    the same for any number of ranks.

    Args:
        model: A folder written by `CrystalDiffusion.save_pretrained` (e.g. `<run>/pretrained`).
        out: Output folder (reuse it to resume).
        prompt: Caption to condition on, e.g. "a cubic perovskite oxide"; a formula in it ("LiFePO4 in an
            orthorhombic cell") makes the atom count a multiple of the formula.
        properties: Target properties in manifest units, e.g. '{"band_gap": 1.5}'.
        composition: Formula, e.g. SrTiO3 (CSP and composition-conditioned models; other de novo models hold
            these atom types fixed and place them); its atoms as written are the cell's unless num_atoms says
            otherwise.
        xrd: Measured or simulated powder pattern file (.xy, .xye, .dat, pdCIF ...): background removed and
            resampled onto the model's 2θ grid (XRD-conditioned models).
        spacegroup: Space group number or symbol, e.g. 225 or Fm-3m (space-group-conditioned models).
        elements: Chemical system the atom types are drawn from, e.g. Li-Fe-P-O (any de novo model; a crystal may
            use a subset). A constraint at sampling, not a learned condition.
        prompt_formula: What a formula in the prompt does: atoms (default: the atom count only, the text decides
            the types), elements (types drawn from the formula's elements), exact (types held at the formula: the
            model places them, structure prediction by infilling) or ignore.
        composition_first: Draw each crystal's reduced formula from the model's composition model given the
            conditions, then denoise the structure with those types held (models trained with composition.enabled;
            the drawn formula is in samples.jsonl).
        composition_sampling: How formulas are drawn, e.g. '{"temperature": 0.5, "guidance": 2}' (defaults 1, 1:
            plain conditional sampling; temperature 0: the most likely formula); recorded with the samples.
        symmetry: Hold each crystal to a space group (225, Fm-3m), a crystal system (cubic) or the crystal system
            the prompt names (prompt), through the space group and orbits of a known crystal with a fitting formula
            (needs composition_first or a held composition, and templates).
        templates: Prepared data folder (`mmcrystal prepare`) whose train split gives the symmetry templates: the
            decoder's own training data.
        num_atoms: Atoms per crystal (or one per crystal); default: predicted from the condition (or composition).
        n: Number of crystals.
        steps: Reverse-diffusion steps (below 100: the few-step sampler).
        guidance: Classifier-free guidance: one scale for all conditions (0 unconditional, 1 conditional), or one
            per condition, e.g. '{"text": 3, "properties": 1.5}' (given conditions not named: 1).
        seed: Run seed (the same seed gives the same crystals, for any number of ranks).
        batch_size: Crystals per batch (one reverse loop and one file write per batch).
        device: "cpu" or "cuda" (under several ranks, each takes the GPU of its local rank).
        sampler: `SamplerConfig` fields over the step-count defaults, e.g. '{"corrector_steps": 0}' (recorded with
            the samples; BENCHMARKS.md compares settings).
        merge: Only merge the rank shards under this OUT folder (after an interrupted distributed run).
        merge_wait: Seconds rank 0 waits for the other ranks before merging what is finished.
    """
    if merge is not None:
        return merge_shards(merge)
    if model is None or out is None:
        raise ValueError("mmcrystal sample needs --model DIR and --out DIR (or --merge OUT)")
    info = rank_info()
    generator = CrystalGenerator.from_pretrained(model, device_for_rank(device, info))
    generator.sampler_settings = dict(sampler or {})
    generator.composition_settings.update(composition_sampling or {})
    if templates is not None:
        from mmcrystal.generation.templates import TemplateLibrary

        generator.templates = TemplateLibrary.from_shards(templates, "train")
    elif symmetry is not None:
        raise ValueError("--symmetry needs --templates <prepared data folder> (the crystals templates come from)")
    return write_samples(generator, out, n=n, batch_size=batch_size, seed=seed, steps=steps, guidance=guidance,
                         num_atoms=num_atoms, model_id=model_fingerprint(model), rank=info, merge_wait=merge_wait,
                         prompt=prompt, properties=properties, composition=composition, xrd=xrd,
                         spacegroup=spacegroup, elements=elements, prompt_formula=prompt_formula,
                         composition_first=composition_first, symmetry=symmetry)  # fmt: skip
