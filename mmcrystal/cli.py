"""The one console script, ``mmcrystal``. Every command is also a plain Python function.

Sub-commands are looked up lazily: ``mmcrystal --help`` imports nothing heavy; ``mmcrystal prepare --help`` imports
only the data pipeline. Function commands are built by jsonargparse from the functions' typed signatures and
docstrings, so ``--help`` text and the Python API never drift apart.
"""

from __future__ import annotations

import importlib
import logging
import sys

# name -> ("module:function", one-line summary). Summaries live here so --help needs no imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("mmcrystal.data.download:download", "fetch a public benchmark dataset (or copy it from a mirror)"),
    "datasets": ("mmcrystal.data.registry:list_datasets", "list the datasets `download` knows"),
    "prepare": ("mmcrystal.data.prepare:prepare", "validate records, derive modalities, write shards + manifest"),
    "inspect": ("mmcrystal.data.inspect:inspect_prepared", "summarise a prepared folder (counts, rejects, stats)"),
    "evaluate": ("mmcrystal.evaluation.run:evaluate", "staged evaluation of generated crystals (validity ... cost)"),
    "evaluate-csp": ("mmcrystal.evaluation.run:evaluate_csp", "CSP match rate, RMSE, METRe and cRMSE against targets"),
    "embed": ("mmcrystal.embed:embed", "embed a prepared split with an aligned model (.npz of embeddings)"),
    "search": ("mmcrystal.embed:search", "rank a prepared split against a caption, a CIF or a measured XRD file"),
    "sample": ("mmcrystal.generate:sample", "generate crystals with a trained decoder, streamed to disk, resumable"),
    "predict": ("mmcrystal.finetune.predict:predict", "predict properties (mean, std) of CIFs or a prepared split"),
    "crossval": (
        "mmcrystal.finetune.crossval:crossval",
        "Matbench-style k-fold fine-tuning benchmark and learning curves",
    ),
    "design": ("mmcrystal.design.run:design", "closed-loop inverse design: propose, screen, score, update"),
    "demo": (
        "mmcrystal.demo:demo",
        "the main job, small: prepare MP-20, align, train a decoder, sample a prompt, evaluate",
    ),
}


# Lightning stages: `mmcrystal <stage> {fit,validate,test} -c recipe.yaml` (LightningCLI; see mmcrystal/train.py).
STAGES: dict[str, str] = {
    "align": "contrastive + cross-attention alignment of crystal, text, XRD, DOS, micrographs",
    "diffuse": "conditional crystal diffusion decoder (text, properties, XRD, composition)",
    "finetune": "pretrained encoders + heads on downstream property tasks",
}


def _usage() -> str:
    width = max(len(n) for n in [*COMMANDS, *STAGES])
    lines = ["usage: mmcrystal <command> [--help] [options]", "", "training stages (fit | validate | test):"]
    lines += [f"  {name:<{width}}  {summary}" for name, summary in STAGES.items()]
    lines += ["", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Every command is also a Python function, e.g. mmcrystal.data.prepare.prepare(...)."]
    return "\n".join(lines)


def resolve(name: str):
    """Import and return the function behind a command."""
    module_name, _, attr = COMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def run_function_command(name: str, argv: list[str]):
    from jsonargparse import CLI

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = CLI(resolve(name), args=argv, prog=f"mmcrystal {name}", as_positional=True)
    if isinstance(result, list):
        import json

        print(json.dumps(result, indent=1, default=str))
    elif result is not None and not isinstance(result, dict):
        print(result)
    return result


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    if argv[0] in ("-V", "--version"):
        from mmcrystal import __version__

        print(__version__)
        return
    name, rest = argv[0], argv[1:]
    if name in STAGES:
        from mmcrystal.train import run_stage

        run_stage(name, rest)
        return
    if name not in COMMANDS:
        print(f"mmcrystal: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    run_function_command(name, rest)


if __name__ == "__main__":
    main()
