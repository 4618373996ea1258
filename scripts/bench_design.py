"""Design benchmark: random sampling vs plain conditional sampling vs the closed loop, at equal oracle budget.

Hits are oracle-scored candidates that are S.U.N. (E_hull <= e_hull_max, unique in the run, novel against the
training structures) and inside every objective window; the figure of merit is hits per 100 oracle calls.

    random       unconditional samples, a random shortlist of the screened ones
    conditional  the window's centre as the property condition, a random shortlist (plain conditional sampling)
    loop         CMA-ES over the condition, surrogate-ranked shortlist, active learning, monitors
    loop_decoder the loop, and the decoder fine-tuned on each round's hits (DecoderFineTuner; on a copy of the
                 decoder, so the other strategies see the original)

The decoder, the training reference, the surrogate and the oracle are loaded once and shared (each strategy gets
its own oracle call counter and run folder under --out). Every strategy runs the same recipe otherwise.

    python scripts/bench_design.py --config configs/design/band_gap_window.yaml --decoder <run>/pretrained \
        --surrogate <finetune run>/pretrained --oracle-models <held-out finetune run>/pretrained \
        --oracle-calls 200 --out runs/bench_design
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

STRATEGIES = {
    "random": dict(kind="random", selection="random", active_learning=False),
    "conditional": dict(kind="conditional", selection="random", active_learning=False),
    "conditional_ranked": dict(kind="conditional", selection="acquisition", active_learning=False),
    "loop": dict(kind="cmaes", selection="acquisition", active_learning=True),
    "loop_decoder": dict(kind="cmaes", selection="acquisition", active_learning=True, finetune_decoder=True),
}


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/design/band_gap_window.yaml", help="design recipe")
    parser.add_argument("--decoder", help="band-gap-conditioned decoder folder (needed unless --table-only)")
    parser.add_argument("--surrogate", nargs="*", default=None, help="PropertyPredictor folder(s) (default: ridge)")
    parser.add_argument("--oracle-models", nargs="*", default=None, help="held-out PropertyPredictor folder(s)")
    parser.add_argument("--oracle-calls", type=int, default=200, help="oracle budget of every strategy")
    parser.add_argument("--oracle-per-round", type=int, default=None)
    parser.add_argument("--samples-per-round", type=int, default=None)
    parser.add_argument("--max-rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="reverse-diffusion steps")
    parser.add_argument("--stability", choices=["chgnet", "none"], default=None)
    parser.add_argument("--no-relax", action="store_true", help="CHGNet single points instead of relaxations")
    parser.add_argument("--strategies", nargs="+", default=["random", "conditional", "loop"], choices=list(STRATEGIES))
    parser.add_argument("--out", default="runs/bench_design")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument(
        "--e-hull-floor",
        type=float,
        default=-0.1,
        help="also count hits with E_hull >= this (eV/atom): far below a sparse hull is suspect",
    )
    parser.add_argument("--table-only", action="store_true", help="rewrite results.md from --out, run nothing")
    return parser.parse_args()


def _floored_hits(run: Path, floor: float) -> int:
    """Hits of a finished strategy folder whose E_hull is >= floor (read from its round tables)."""
    from mmcrystal.design.store import RunStore

    rounds = json.loads((run / "state.json").read_text())["round"]
    rows = RunStore.reader(run).all_rows(rounds)
    return sum(1 for r in rows if r.get("hit") and r.get("e_hull") is not None and float(r["e_hull"]) >= floor)


def _write_table(out: Path, results: dict, floor: float) -> str:
    lines = ["| strategy | oracle calls | samples | passed screen | S.U.N. | in target | hits | hits / 100 oracle calls "
             f"| hits with E_hull >= {floor:g} | S.U.N. / 100 oracle calls | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        floored = _floored_hits(out / name, floor)
        lines.append(f"| {name} | {r['oracle_calls']:.0f} | {r['samples']:.0f} | {r['passed']:.0f} | {r['sun']:.0f} "
                     f"| {r['in_target']:.0f} | {r['hits']:.0f} | {r['hits_per_100_oracle_calls']:.1f} | {floored} "
                     f"| {r['sun_per_100_oracle_calls']:.1f} | {r['wall_s']} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def _base_config(args):
    from mmcrystal.design.run import load_design_config

    overrides = {"decoder": args.decoder, "seed": args.seed, "budget": {"max_oracle_calls": args.oracle_calls}}
    for key, value in (("oracle_per_round", args.oracle_per_round), ("samples_per_round", args.samples_per_round),
                       ("max_rounds", args.max_rounds)):  # fmt: skip
        if value is not None:
            overrides["budget"][key] = value
    if args.steps is not None:
        overrides["strategy"] = {"steps": args.steps}
    if args.surrogate:
        overrides["surrogate"] = {"models": args.surrogate}
    oracle = {}
    if args.oracle_models:
        oracle["property_models"] = args.oracle_models
    if args.stability:
        oracle["stability"] = args.stability
    if args.no_relax:
        oracle["relax"] = False
    if oracle:
        overrides["oracle"] = oracle
    if args.device:
        overrides["device"] = args.device
    return load_design_config(args.config, **overrides)


def main() -> None:
    import torch

    from mmcrystal.design.oracle import DesignOracle
    from mmcrystal.design.report import run_totals
    from mmcrystal.design.run import build_oracle, build_surrogate, load_reference_index, run_design
    from mmcrystal.generate import CrystalGenerator

    args = _args()
    if args.table_only:
        print(_write_table(Path(args.out), json.loads((Path(args.out) / "results.json").read_text())["results"],
                           args.e_hull_floor))  # fmt: skip
        return
    if not args.decoder:
        raise SystemExit("--decoder is needed to run the benchmark")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = _base_config(args)
    start = time.perf_counter()
    generator = CrystalGenerator.from_pretrained(base.decoder, base.device)
    surrogate = build_surrogate(base)
    shared_oracle = build_oracle(base, load_reference_index(base))
    setup_s = time.perf_counter() - start
    previous = Path(args.out) / "results.json"  # strategies run by earlier calls into the same --out stay listed
    results = json.loads(previous.read_text())["results"] if previous.exists() else {}
    for name in args.strategies:
        strategy = replace(base.strategy, **STRATEGIES[name])
        cfg = replace(copy.deepcopy(base), out=str(Path(args.out) / name), strategy=strategy)
        oracle = DesignOracle(shared_oracle.property_model, shared_oracle.stability)  # its own call counter
        began = time.perf_counter()
        decoder = copy.deepcopy(generator) if strategy.finetune_decoder else generator  # updated in place
        summary = run_design(cfg, decoder, surrogate, oracle)
        state = json.loads((Path(cfg.out) / "state.json").read_text())
        results[name] = {**run_totals(state["history"]), "rounds": state["round"], "stopped": state["stopped"],
                         "wall_s": round(time.perf_counter() - began, 1), "report": summary.get("report")}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"config": args.config, "decoder": base.decoder, "oracle_calls": args.oracle_calls,
               "setup_s": round(setup_s, 1), "results": results}  # fmt: skip
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str))
    print(_write_table(out, results, args.e_hull_floor))


if __name__ == "__main__":
    main()
