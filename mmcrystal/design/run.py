"""`mmcrystal design`: closed-loop inverse design from a recipe, and `run_design` for Python callers.

    mmcrystal design --config configs/design/band_gap_window.yaml [--budget.max_oracle_calls 200]
    mmcrystal design --config configs/design/band_gap_window.yaml --out runs/design_gap   # rerun = resume

    from mmcrystal.design.run import run_design, load_design_config
    run_design(load_design_config("configs/design/band_gap_window.yaml"))
    run_design(config, generator=my_generator, surrogate=my_model, oracle=my_oracle)   # any part injected

`run_design` builds what is not injected: the decoder (`CrystalGenerator.from_pretrained`), the training-set
reference index (novelty, hull, density), the surrogate (PropertyPredictor folders, else a ridge ensemble on the
reference labels), the oracle (CHGNet + hull, and a held-out property model) and the screen; runs the loop
(`mmcrystal.design.loop`) and writes the report (`mmcrystal.design.report`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmcrystal.design.config import (
    BudgetConfig,
    ChemistryConstraints,
    DesignConfig,
    MonitorConfig,
    OracleConfig,
    PropertyObjective,
    ScreenConfig,
    StrategyConfig,
    SurrogateConfig,
)

__all__ = [
    "build_density_reference",
    "build_oracle",
    "build_surrogate",
    "design",
    "load_design_config",
    "load_reference_index",
    "run_design",
]

log = logging.getLogger(__name__)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_design_config(path: str | Path, **overrides: Any) -> DesignConfig:
    """A `DesignConfig` from a recipe YAML (the arguments of `design`), with nested overrides merged in, e.g.
    `load_design_config(path, out="runs/x", budget={"max_rounds": 2})`. Parsed and type-checked as the CLI does."""
    import yaml
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(design, as_positional=False)
    values = _merge(yaml.safe_load(Path(path).read_text()) or {}, overrides)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    init = instantiate(parser.parse_object(values))
    kwargs = {name: init[name] for name in DesignConfig.__dataclass_fields__}
    kwargs["reference"], kwargs["objectives"] = list(kwargs["reference"] or []), list(kwargs["objectives"] or [])
    return DesignConfig(**kwargs)


def _cache_dir(cfg: DesignConfig) -> Path:
    from mmcrystal.evaluation.protocol import default_cache_dir

    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def _reference_index(paths, cache_dir: Path):
    from mmcrystal.evaluation.matching import load_or_build_index

    return load_or_build_index(list(paths), cache_dir) if paths else None


def load_reference_index(cfg: DesignConfig):
    """The training structures' `ReferenceIndex` (cached on disk), or None without `reference`."""
    return _reference_index(cfg.reference, _cache_dir(cfg))


def build_density_reference(index, cfg: MonitorConfig, featurize: Callable, seed: int = 0):
    """Training features for the shift monitor: compositions from the index's buckets (formula x count), or
    embeddings of its reduced structures for features="aligned". None without a reference."""
    from mmcrystal.design.monitors import DensityReference
    from mmcrystal.evaluation.matching import from_compact

    if index is None or index.n_structures <= cfg.knn:
        log.warning("no (or too small a) training reference: the distribution-shift monitor is off")
        return None
    if cfg.features == "composition":
        from mmcrystal.evaluation.fingerprints import composition_fingerprint

        keys = [key.split("|")[0] for key, entries in index.buckets.items() for _ in entries]
        features = np.asarray([composition_fingerprint(k) for k in keys])
        return DensityReference(features, cfg.knn, cfg.shift_quantile, standardise=True, seed=seed)
    entries = [c for entries in index.buckets.values() for _, c in entries]
    keep = np.random.default_rng(seed).permutation(len(entries))[:4000]
    features = featurize([from_compact(entries[i]) for i in sorted(keep)])
    return DensityReference(features, cfg.knn, cfg.shift_quantile, standardise=False, seed=seed)


def _featurizer(cfg: MonitorConfig) -> Callable:
    from mmcrystal.design.monitors import AlignedCrystalFeatures, composition_features

    if cfg.features == "aligned":
        if not cfg.aligned_model:
            raise ValueError("monitors.features=aligned needs monitors.aligned_model (an aligned model folder)")
        return AlignedCrystalFeatures(cfg.aligned_model)
    return composition_features


def build_surrogate(cfg: DesignConfig):
    """The configured surrogate: `PropertyPredictor` folders, else a ridge ensemble on the reference labels."""
    from mmcrystal.design.surrogates import PretrainedPropertyModel, train_ridge_ensemble

    if cfg.surrogate.models:
        s = cfg.surrogate
        return PretrainedPropertyModel(
            s.models, device=cfg.device, residual_std=s.residual_std, mc_samples=s.mc_samples
        )
    if not cfg.reference:
        raise ValueError("no surrogate: give surrogate.models or labelled reference structures")
    s = cfg.surrogate
    return train_ridge_ensemble(cfg.reference, cfg.property_names, s.members, s.alpha, False, s.max_train, cfg.seed)


def build_oracle(cfg: DesignConfig, index):
    """The configured oracle: CHGNet stability against a hull of `index` (or of oracle.hull_reference) and the
    held-out property model."""
    from mmcrystal.design.oracle import ChgnetHullStability, DesignOracle
    from mmcrystal.design.surrogates import PretrainedPropertyModel, train_ridge_ensemble
    from mmcrystal.evaluation.stability import RelaxConfig

    o = cfg.oracle
    if o.property_models:
        model = PretrainedPropertyModel(o.property_models, device=cfg.device)
    elif o.property_reference:
        if sorted(o.property_reference) == sorted(cfg.reference) and not cfg.surrogate.models:
            raise ValueError("oracle.property_reference must differ from the surrogate's training data (reference)")
        model = train_ridge_ensemble(o.property_reference, cfg.property_names, include_structure=True, seed=cfg.seed)
    else:
        raise ValueError("no oracle property model: give oracle.property_models or oracle.property_reference")
    stability, cache_dir = None, _cache_dir(cfg)
    if o.stability == "chgnet":
        hull_index = _reference_index(o.hull_reference, cache_dir) if o.hull_reference else index
        if hull_index is None:
            raise ValueError("CHGNet stability needs hull structures: give reference or oracle.hull_reference")
        relax = RelaxConfig(relax=o.relax, fmax=o.fmax, steps=o.relax_steps, device=o.device)
        stability = ChgnetHullStability(hull_index, relax, cache_dir, o.elemental_prototypes, o.max_hull_elements)
    return DesignOracle(model, stability)


def run_design(
    config: DesignConfig,
    generator=None,
    surrogate=None,
    oracle=None,
    decoder_update: Callable | None = None,
    on_round_end: Callable[[int, dict], None] | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Run or resume a design run; any of generator, surrogate (`PropertyModel`) and oracle may be injected.

    Returns a summary: why it stopped, rounds, oracle calls, samples, S.U.N. and hits, the run folder.
    """
    from mmcrystal.design.loop import DesignLoop
    from mmcrystal.design.screen import CandidateScreen

    cfg = config
    if generator is None:
        if not cfg.decoder:
            raise ValueError("give decoder (a folder written by CrystalDiffusion.save_pretrained) or a generator")
        from mmcrystal.generate import CrystalGenerator

        generator = CrystalGenerator.from_pretrained(cfg.decoder, cfg.device)
    index = load_reference_index(cfg)
    if index is None:
        log.warning("no reference structures: novelty is not judged (every candidate counts as novel)")
    if cfg.strategy.finetune_decoder and decoder_update is None:
        if not callable(getattr(getattr(generator, "model", None), "losses", None)):
            raise ValueError("strategy.finetune_decoder needs a CrystalGenerator (a decoder with a training loss) or "
                             "a decoder_update callable")  # fmt: skip
        from mmcrystal.design.decoder_update import DecoderFineTuner
        from mmcrystal.design.loop import derive_seed

        st = cfg.strategy
        decoder_update = DecoderFineTuner(st.decoder_steps, st.decoder_lr, st.decoder_batch_size,
                                          seed=derive_seed(cfg.seed, "decoder"))  # fmt: skip
    featurize = _featurizer(cfg.monitors)
    density = build_density_reference(index, cfg.monitors, featurize, cfg.seed)
    loop = DesignLoop(
        cfg,
        generator,
        surrogate if surrogate is not None else build_surrogate(cfg),
        oracle if oracle is not None else build_oracle(cfg, index),
        CandidateScreen(cfg.screen, cfg.chemistry, index),
        density,
        featurize,
        decoder_update,
        on_round_end,
    )
    summary = loop.run()
    if report:
        from mmcrystal.design.report import write_report

        summary["report"] = str(write_report(cfg.out, cfg))
    log.info("design: %s", summary)
    return summary


def design(
    out: str = "runs/design",
    decoder: str | None = None,
    reference: list[str] | None = None,
    objectives: list[PropertyObjective] | None = None,
    chemistry: ChemistryConstraints = ChemistryConstraints(),
    budget: BudgetConfig = BudgetConfig(),
    strategy: StrategyConfig = StrategyConfig(),
    screen: ScreenConfig = ScreenConfig(),
    surrogate: SurrogateConfig = SurrogateConfig(),
    oracle: OracleConfig = OracleConfig(),
    monitors: MonitorConfig = MonitorConfig(),
    seed: int = 0,
    device: str = "cpu",
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Closed-loop inverse design: propose crystals, screen them, score them with a surrogate ensemble, send a
    shortlist to the oracle (CHGNet E_hull + a held-out property model), update, and monitor failure modes.

    Writes a resumable run folder: config.json, rounds/round_<k>.jsonl|.csv (every candidate, score and decision),
    state.json, report.md and plots/. Rerunning with the same folder resumes; only the budget (and the device and
    cache folder) may change.

    Args:
        out: Run folder.
        decoder: Folder of a trained decoder (`CrystalDiffusion.save_pretrained`).
        reference: Training structures (CSV/CIF folders/prepared shards): novelty, hull, density, surrogate labels.
        objectives: Property windows, e.g. [{name: band_gap, low: 1.0, high: 2.0}].
        chemistry: Chemical system, required and excluded elements, size limits.
        budget: Rounds, samples, oracle calls, potential evaluations, wall time.
        strategy: random | conditional | cmaes, selection rule, guidance, steps, active learning.
        screen: Staged screen options.
        surrogate: Surrogate ensemble (PropertyPredictor folders, or a ridge ensemble).
        oracle: Stability (CHGNet + hull) and the held-out property model.
        monitors: Failure-mode thresholds and actions.
        seed: Run seed.
        device: Device of the decoder and the property models.
        cache_dir: Cache of reference indices and hull energies.
    """
    cfg = DesignConfig(out=out, decoder=decoder, reference=list(reference or []), objectives=list(objectives or []),
                       chemistry=chemistry, budget=budget, strategy=strategy, screen=screen, surrogate=surrogate,
                       oracle=oracle, monitors=monitors, seed=seed, device=device, cache_dir=cache_dir)  # fmt: skip
    return run_design(copy.deepcopy(cfg))
