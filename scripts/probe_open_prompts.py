"""Open prompts, no formula named: do a decoder's composition-first formulas follow what the words say?

The MP-40 composition match scores captions that name their formula (98 % of them), which a copy pointer can
solve by copying. Users also write "a layered sulfide". For each prompt below (or `--prompt TEXT=El,El`), draw
`--n` formulas from the composition model (`CrystalGenerator.sample_formulas`, the formulas a composition-first run
would hold) and report:
  - named: the share of draws that contain every element the words name (sulfide -> S, lithium -> Li),
  - smact: the share that pass the SMACT charge-neutrality / electronegativity screen (`mmcrystal.evaluation`),
  - distinct: distinct reduced formulas among the draws.

    python scripts/probe_open_prompts.py --model <decoder>/pretrained [--model <another>] --n 50 --out probe.json
        [--set paraphrased]

`--set paraphrased` holds prompts written unlike the word descriptions the composition model may have been trained
on (`mmcrystal.diffusion.formula_words`: "lithium iron phosphate", "sulfide", "compound of X and Y"): elements
named in other phrasings, a symbol instead of a name, mineral and application words. It checks that a model trained
on descriptions follows words, not the description grammar.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROMPTS: dict[str, tuple[str, ...]] = {
    "a wide-gap perovskite oxide": ("O",),
    "a lithium-ion cathode material": ("Li",),
    "a nitride semiconductor": ("N",),
    "a layered sulfide": ("S",),
    "a fluoride with a large band gap": ("F",),
    "a metal hydride for hydrogen storage": ("H",),
    "a chloride salt": ("Cl",),
    "a phosphate framework": ("P", "O"),
    "a transition-metal carbide": ("C",),
    "a selenide thermoelectric": ("Se",),
    "a telluride": ("Te",),
    "an iodide": ("I",),
}
PARAPHRASED: dict[str, tuple[str, ...]] = {
    "a material made of zinc and selenium": ("Zn", "Se"),
    "contains barium and bismuth": ("Ba", "Bi"),
    "a magnesium silicate mineral": ("Mg", "Si", "O"),
    "a Na-ion battery electrode": ("Na",),
    "a copper-based superconductor with oxygen": ("Cu", "O"),
    "a rare-earth cerium magnet": ("Ce",),
    "bismuth telluride thermoelectric": ("Bi", "Te"),
    "an antiperovskite with nitrogen": ("N",),
    "a compound with tin and sulfur for solar cells": ("Sn", "S"),
    "a gallium semiconductor": ("Ga",),
}
SETS = {"builtin": PROMPTS, "paraphrased": PARAPHRASED}


def probe(model: str, prompts: dict[str, tuple[str, ...]], n: int, seed: int = 0) -> dict:
    """Per-prompt and mean named / smact / distinct of `n` formulas per prompt from the decoder folder `model`."""
    from mmcrystal.evaluation.validity import smact_valid
    from mmcrystal.generate import CrystalGenerator

    generator = CrystalGenerator.from_pretrained(model)
    if generator.model.composition is None:
        raise SystemExit(f"{model}: no composition model (train with composition.enabled: true)")
    rows = {}
    for prompt, elements in prompts.items():
        formulas = generator.sample_formulas(n=n, seed=seed, prompt=prompt)
        symbols = [{el.symbol for el in f.elements} for f in formulas]
        rows[prompt] = {
            "elements": list(elements),
            "named": sum(set(elements) <= s for s in symbols) / len(formulas),
            "smact": sum(bool(smact_valid(f)) for f in formulas) / len(formulas),
            "distinct": len({f.reduced_formula for f in formulas}),
            "examples": [f.reduced_formula for f in formulas[:5]],
        }
    mean = {key: sum(r[key] for r in rows.values()) / len(rows) for key in ("named", "smact", "distinct")}
    return {"model": str(model), "n": n, "seed": seed, "mean": mean, "prompts": rows}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="decoder folder (repeat to compare)")
    parser.add_argument("--n", type=int, default=50, help="formulas per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", choices=sorted(SETS), default="builtin", help="which built-in prompts")
    parser.add_argument("--prompt", action="append", default=[], help="TEXT=El,El: replaces the built-in prompts")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    prompts = SETS[args.set]
    if args.prompt:
        prompts = {}
        for item in args.prompt:
            text, _, elements = item.rpartition("=")
            if not text:
                raise SystemExit(f"--prompt {item!r}: expected TEXT=El,El")
            prompts[text] = tuple(e.strip() for e in elements.split(",") if e.strip())
    results = [probe(model, prompts, args.n, args.seed) for model in args.model]
    for result in results:
        mean = result["mean"]
        print(f"{result['model']}: named {mean['named']:.3f}  smact {mean['smact']:.3f}  "
              f"distinct {mean['distinct']:.1f} of {args.n}")  # fmt: skip
        for prompt, row in result["prompts"].items():
            print(f"  {prompt:40s} named {row['named']:.2f} smact {row['smact']:.2f}  {' '.join(row['examples'])}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
