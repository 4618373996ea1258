"""Text-conditioned generation benchmark on the MP-40 captions test split (Chemeleon protocol, EVALUATION.md).

For each held-out caption: ``--per-prompt`` samples (Chemeleon: 20) at guidance 2.0, the number of atoms predicted
by the decoder's atom-count head (Chemeleon asks the user for it), restricted to multiples of a formula the prompt
names (``--prompt-formula atoms``; ``elements`` / ``exact`` also restrict or hold the atom types, which is no longer
the Chemeleon protocol: report them apart). ``--composition-first`` (decoders trained with the composition model)
draws each sample's reduced formula from p(formula | caption) and then the structure with those types held; the
caption is still the only input, so it stays within the protocol. ``--symmetry prompt --templates <prepared data>``
(with ``--composition-first``) also holds each sample to the crystal system its caption names, through the space
group and orbits of a training crystal with a fitting formula (`mmcrystal.generation.templates`): crystal-system
match is then by construction (like composition with ``--prompt-formula exact``); report it apart. Per caption we record the valid fraction
(structural + SMACT), the unique fraction among valid samples, whether any sample matches the ground truth
(StructureMatcher, ltol 0.3 / stol 0.5 / angle 10 as in the CSP protocol), the composition-match fraction (reduced
formula equal), crystal-system and lattice-system match fractions (spglib, symprec 0.1), and the "any sample"
versions. ``--formulas-only`` scores just the formulas such a run would hold (no structures; every caption of the
split in minutes). Means over captions are printed and written to ``<out>/summary.json`` with the protocol record;
per-caption rows go to ``<out>/per_prompt.csv`` and samples to ``<out>/generated/<material_id>__<j>.cif``.

    python scripts/run_text_benchmark.py --model <run>/pretrained --out runs/mp40_text_eval \
        --prompts ../shared/data/mp_40_text/test.csv --n-prompts 100 --per-prompt 20 --steps 50
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

# spglib crystal system -> lattice system (trigonal splits into rhombohedral / hexagonal lattices by centring)
_LATTICE_SYSTEM = {
    "triclinic": "triclinic",
    "monoclinic": "monoclinic",
    "orthorhombic": "orthorhombic",
    "tetragonal": "tetragonal",
    "cubic": "cubic",
    "hexagonal": "hexagonal",
}


_METRICS = ("valid", "unique", "match_any", "composition", "composition_any", "composition_l1", "crystal_system",
            "crystal_system_any", "lattice_system", "num_atoms_mean")  # fmt: skip


def lattice_system(structure, symprec: float = 0.1) -> str | None:
    """Lattice system of spglib's conventional cell (``rhombohedral`` vs ``hexagonal`` for trigonal crystals)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return str(SpacegroupAnalyzer(structure, symprec=symprec).get_lattice_type())
    except Exception:  # noqa: BLE001 - spglib fails on degenerate cells: counted as a miss
        return None


def composition_l1(structure, target) -> float:
    """Sum over elements of |atom fraction in `structure` - atom fraction in `target`|: 0 for the same reduced
    formula, 2 for disjoint elements. Finer than exact match: it sees ratios that are close but not equal."""
    return fraction_l1(structure.composition, target.composition)


def fraction_l1(composition, reference) -> float:
    """`composition_l1` of two pymatgen Compositions."""
    gen, ref = composition.fractional_composition, reference.fractional_composition
    return float(sum(abs(gen[el] - ref[el]) for el in set(gen.elements) | set(ref.elements)))


def training_ids(root: str | None) -> set[str]:
    """Material ids of a prepared data folder's train split (what the decoder was trained on), or an empty set."""
    if root is None:
        return set()
    from mmcrystal.data.shards import iter_shard

    manifest = json.loads((Path(root) / "manifest.json").read_text())
    return {json.loads(files["meta.json"])["id"] for shard in manifest["splits"]["train"]["shards"]
            for _, files in iter_shard(str(Path(root) / shard["file"]))}  # fmt: skip


def unseen_means(table: pd.DataFrame, seen: set[str], metrics: list[str]) -> dict:
    """Means over the captions whose material the decoder never saw in training (and how many it did see)."""
    if not seen:
        return {}
    inside = table.material_id.astype(str).isin(seen)
    part = table[~inside]
    return {"n_seen_in_training": int(inside.sum()),
            "mean_unseen": {m: round(float(part[m].mean()), 4) for m in metrics}}  # fmt: skip


def formulas_only(generator, frame: pd.DataFrame, per_prompt: int, seed: int, out: Path, split_atoms: int) -> dict:
    """Composition match of the composition model's formulas alone (`CrystalGenerator.sample_formulas`: the ones a
    composition-first run holds, same seeds), no structures: cheap enough for every caption of the split. Also
    reported apart: captions whose structure has at most / more than `split_atoms` atoms, those whose formula
    unit alone has more, and by what the caption names (`caption_names`: its structure's reduced formula, another
    formula, or none, by the rules of `mmcrystal.formulas`): copying can only help the first kind."""
    from pymatgen.core import Composition, Structure

    from mmcrystal.formulas import formula_counts

    rows = []
    for row in frame.itertuples():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = Structure.from_str(row.cif, fmt="cif").composition
        named = formula_counts(str(row.prompt))
        names = "none" if not named else "its_formula" if Composition(
            {int(z): n for z, n in named}).reduced_formula == target.reduced_formula else "another"  # fmt: skip
        try:
            drawn = generator.sample_formulas(n=per_prompt, seed=seed, prompt=str(row.prompt))
        except ValueError as error:  # a prompt the model refuses: a miss at the worst distance, as in the full run
            print(f"{row.material_id}: no formulas ({error}); scored as a miss")
            rows.append({"material_id": row.material_id, "target": target.reduced_formula, "error": str(error),
                         "caption_names": names,
                         "num_atoms_target": int(target.num_atoms),
                         "formula_unit_atoms": int(target.reduced_composition.num_atoms),
                         "composition": 0.0, "composition_any": 0.0, "composition_l1": 2.0})  # fmt: skip
            continue
        hits = [f.reduced_formula == target.reduced_formula for f in drawn]
        rows.append({"material_id": row.material_id, "target": target.reduced_formula, "caption_names": names,
                     "num_atoms_target": int(target.num_atoms),
                     "formula_unit_atoms": int(target.reduced_composition.num_atoms),
                     "drawn": " ".join(f.reduced_formula for f in drawn), "composition": float(np.mean(hits)),
                     "composition_any": float(any(hits)),
                     "composition_l1": float(np.mean([fraction_l1(f, target) for f in drawn]))})  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(out / "formulas_per_prompt.csv", index=False)
    metrics = ["composition", "composition_any", "composition_l1"]

    def mean(part: pd.DataFrame) -> dict:
        return {"n_prompts": len(part), **{m: round(float(part[m].mean()), 4) for m in metrics}}

    return {
        "all": mean(table),
        "split_atoms": split_atoms,
        "structure_within_split": mean(table[table.num_atoms_target <= split_atoms]),
        "structure_beyond_split": mean(table[table.num_atoms_target > split_atoms]),
        "formula_unit_beyond_split": mean(table[table.formula_unit_atoms > split_atoms]),
        "prompts_without_formulas": int(table["error"].notna().sum()) if "error" in table else 0,
        "caption_names": {
            kind: mean(table[table.caption_names == kind])
            for kind in ("its_formula", "another", "none")
            if "caption_names" in table and (table.caption_names == kind).any()
        },  # fmt: skip
        "table": table,
    }


def template_skeleton(samples: list, templates: list | None, library, matcher) -> dict:
    """With symmetry templates: the fraction of samples that took one, and the fraction that kept its training
    crystal's skeleton (StructureMatcher ``fit_anonymous``: the same structure up to a relabelling of elements),
    i.e. how much of the result is the template rather than the decoder."""
    if templates is None or library is None:
        return {}
    kept = [t is not None and matcher.fit_anonymous(s, library.structure(t["source"]))
            for s, t in zip(samples, templates, strict=True)]  # fmt: skip
    n = max(len(samples), 1)
    return {"templated": sum(t is not None for t in templates) / n, "template_skeleton": sum(kept) / n}


def score_prompt(samples: list, target, crystal_system: str, matcher) -> dict:
    """Per-caption metrics of ``samples`` (pymatgen Structures) against the ground-truth ``target``."""
    from mmcrystal.evaluation.adherence import composition_match, symmetry_info
    from mmcrystal.evaluation.validity import validity_record

    valid = [s for s in samples if validity_record(s)["valid"]]
    formula = target.composition.reduced_formula
    target_lattice = lattice_system(target)
    comp = [composition_match(s, formula) for s in samples]
    systems = [symmetry_info(s)[1] for s in samples]
    lattices = [lattice_system(s) for s in samples]
    unique: list = []
    for s in valid:
        if not any(matcher.fit(s, u) for u in unique):
            unique.append(s)
    match_any = any(comp_ok and matcher.fit(target, s) for s, comp_ok in zip(samples, comp, strict=True))
    n = max(len(samples), 1)
    return {
        "n": len(samples),
        "valid": len(valid) / n,
        "unique": len(unique) / max(len(valid), 1),
        "match_any": float(match_any),
        "composition": sum(comp) / n,
        "composition_any": float(any(comp)),
        "composition_l1": sum(composition_l1(s, target) for s in samples) / n,
        "crystal_system": sum(c == crystal_system for c in systems) / n,
        "crystal_system_any": float(any(c == crystal_system for c in systems)),
        "lattice_system": sum(lat == target_lattice for lat in lattices) / n,
        "num_atoms_target": len(target),
        "num_atoms_mean": float(np.mean([len(s) for s in samples])) if samples else 0.0,
    }


def _read_cif(path: Path):
    """A written sample; pymatgen's CIF reader merges sites closer than 1e-4 (fractional) and then refuses the file,
    so coinciding atoms (an invalid sample) are read back through ASE's tolerant reader."""
    from pymatgen.core import Structure

    try:
        return Structure.from_file(str(path))
    except ValueError:
        from ase.io import read
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_structure(read(str(path)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", default="../shared/data/mp_40_text/test.csv")
    parser.add_argument("--n-prompts", type=int, default=100)
    parser.add_argument("--per-prompt", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt-formula", default="atoms", choices=["atoms", "elements", "exact", "ignore"],
                        help="what a formula in the prompt does (mmcrystal.generation.conditions): the Chemeleon "
                             "protocol measures 'atoms' (the text alone decides the types)")  # fmt: skip
    parser.add_argument("--sampler", type=json.loads, default={},
                        help='SamplerConfig fields over the step-count defaults, e.g. \'{"lattice_eta": 0.0}\'')  # fmt: skip
    parser.add_argument("--composition-first", action="store_true",
                        help="draw each formula from the decoder's composition model, then the structure")  # fmt: skip
    parser.add_argument("--composition-sampling", type=json.loads, default={},
                        help='composition model temperature / guidance, e.g. \'{"temperature": 0.5}\'')  # fmt: skip
    parser.add_argument("--formulas-only", action="store_true",
                        help="score only the composition model's formulas (no structures) on --n-prompts captions; "
                             "writes formulas_summary.json")  # fmt: skip
    parser.add_argument("--split-atoms", type=int, default=None,
                        help="with --formulas-only: also report captions whose structure has <= / > this many atoms "
                             "(default: the decoder's max_atoms)")  # fmt: skip
    parser.add_argument("--symmetry", default=None,
                        help="hold samples to a space group through templates of training crystals: 'prompt' (the "
                             "crystal system the caption names), a crystal system or a space group; needs "
                             "--composition-first and --templates")  # fmt: skip
    parser.add_argument("--templates", default=None,
                        help="prepared data folder (mmcrystal prepare) whose train split gives the templates: the "
                             "decoder's own training data, never the benchmark's test split")  # fmt: skip
    parser.add_argument("--training-data", default=None,
                        help="the decoder's prepared training data: captions whose material is in its train split "
                             "are also left out of a second set of means (mean_unseen)")  # fmt: skip
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.symmetry is not None and args.templates is None:
        parser.error("--symmetry needs --templates (a prepared data folder of training crystals)")

    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    from mmcrystal.generate import CrystalGenerator

    out = Path(args.out)
    (out / "generated").mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(args.prompts, nrows=args.n_prompts)
    generator = CrystalGenerator.from_pretrained(args.model)
    generator.sampler_settings = dict(args.sampler)
    generator.composition_settings.update(args.composition_sampling)
    if args.templates is not None:
        from mmcrystal.generation.templates import TemplateLibrary

        # every material of the prompts file (not only the captions run) is left out: never the answer as template
        test_ids = pd.read_csv(args.prompts, usecols=["material_id"]).material_id.astype(str)
        generator.templates = TemplateLibrary.from_shards(args.templates, "train", exclude=test_ids)
    if args.formulas_only:
        start = time.perf_counter()
        result = formulas_only(generator, frame, args.per_prompt, args.seed, out,
                               args.split_atoms or generator.max_atoms)  # fmt: skip
        result.update(unseen_means(result.pop("table"), training_ids(args.training_data),
                                   ["composition", "composition_any", "composition_l1"]))  # fmt: skip
        summary = {"protocol": {"prompts": args.prompts, "per_prompt": args.per_prompt, "seed": args.seed,
                                "composition_sampling": generator.composition_sampling(),
                                "scored": "reduced formula of each draw vs the caption's structure (no structures)"},
                   "seconds": round(time.perf_counter() - start, 1), **result}  # fmt: skip
        (out / "formulas_summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary, indent=1))
        return
    matcher = StructureMatcher(ltol=0.3, stol=0.5, angle_tol=10)
    rows, sampling_s = [], 0.0
    for row in frame.itertuples():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = Structure.from_str(row.cif, fmt="cif")
        paths = [out / "generated" / f"{row.material_id}__{j}.cif" for j in range(args.per_prompt)]
        template_file = out / "generated" / f"{row.material_id}__templates.json"
        templates = json.loads(template_file.read_text()) if template_file.exists() else None
        if all(p.exists() for p in paths):  # written by an interrupted run with the same seed: reuse
            samples = [_read_cif(p) for p in paths]
        else:
            start = time.perf_counter()
            try:
                samples = generator.sample(
                    prompt=str(row.prompt), n=args.per_prompt, steps=args.steps, guidance=args.guidance,
                    seed=args.seed, batch_size=args.per_prompt, prompt_formula=args.prompt_formula,
                    composition_first=args.composition_first, symmetry=args.symmetry,
                )  # fmt: skip
            except ValueError as error:  # e.g. the prompt's formula unit exceeds the model's max_atoms
                print(f"{row.material_id}: no samples ({error}); scored as a miss")
                rows.append({"material_id": row.material_id, "prompt": row.prompt, "error": str(error),
                             **dict.fromkeys(_METRICS, 0.0), "composition_l1": 2.0,  # a miss: worst distance
                             "num_atoms_target": len(target)})  # fmt: skip
                continue
            sampling_s += time.perf_counter() - start
            for path, structure in zip(paths, samples, strict=True):
                structure.to(filename=str(path))
            if args.symmetry is not None:  # no template list: the caption names no crystal system
                templates = list(generator.last_templates) or [None] * len(samples)
                template_file.write_text(json.dumps(templates))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = score_prompt(samples, target, str(row.crystal_system).lower(), matcher)
            scores.update(template_skeleton(samples, templates, generator.templates, matcher))
        rows.append({"material_id": row.material_id, "prompt": row.prompt, **scores})
    table = pd.DataFrame(rows)
    table.to_csv(out / "per_prompt.csv", index=False)
    metric_cols = [c for c in table.columns if c not in ("material_id", "prompt", "n", "error")]
    within = table[table.num_atoms_target <= generator.max_atoms] if hasattr(generator, "max_atoms") else table
    summary = {
        "protocol": {
            "prompts": args.prompts,
            "n_prompts": len(table),
            "per_prompt": args.per_prompt,
            "steps": args.steps,
            "sampler_settings": dict(args.sampler),  # over the defaults (few-step below 100 steps: DDPM lattice)
            "guidance": args.guidance,
            "seed": args.seed,
            "num_atoms": "atom-count head; restricted to multiples of a formula the prompt names",
            "prompt_formula": args.prompt_formula,
            "composition_first": bool(args.composition_first),
            **({"composition_sampling": generator.composition_sampling()} if args.composition_first else {}),
            **({"symmetry": args.symmetry, "templates": generator.templates.source} if args.symmetry else {}),
            # the decoder reads the caption's formula as element tokens (still only the caption as input)
            "text_formula_tokens": bool(generator.model.config.conditions.text_formula_tokens),
            "matcher": {"ltol": 0.3, "stol": 0.5, "angle_tol": 10},
            "symprec": 0.1,
            "validity": "structural (0.5 A, 0.1 A^3) + SMACT (mmcrystal.evaluation.validity defaults)",
        },  # fmt: skip
        "sampling_s": round(sampling_s, 1),
        "mean": {c: round(float(table[c].mean()), 4) for c in metric_cols},
        "mean_within_max_atoms": {c: round(float(within[c].mean()), 4) for c in metric_cols},
        "n_within_max_atoms": len(within),
        "n_prompts_without_samples": int(table["error"].notna().sum()) if "error" in table else 0,
        **({"template_counts": dict(generator.template_counts)} if args.symmetry else {}),
        **unseen_means(table, training_ids(args.training_data), metric_cols),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
