"""Typed configs of the closed design loop (`mmcrystal design --config configs/design/<goal>.yaml`).

A design run is: objectives (property windows, stability, chemistry), a budget, a strategy that proposes
candidates, a staged screen, a surrogate ensemble, an oracle, and monitors. Every field has a default so a recipe
names only what it changes; `DesignConfig` bundles them for Python callers and for the run folder's snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mmcrystal.config import register_config

__all__ = [
    "BudgetConfig",
    "ChemistryConstraints",
    "DesignConfig",
    "MonitorConfig",
    "OracleConfig",
    "PropertyObjective",
    "ScreenConfig",
    "StrategyConfig",
    "SurrogateConfig",
    "MONITOR_NAMES",
]

MONITOR_NAMES = ("exploitation", "diversity", "shift", "synthesizability")


@register_config
@dataclass
class PropertyObjective:
    """A window on one property, in the physical units the property models report (band_gap in eV, ...).

    Attributes:
        name: Property name as the surrogate and oracle property models call it (e.g. band_gap).
        low: Lower bound of the window (None: unbounded below).
        high: Upper bound of the window (None: unbounded above).
        weight: Exponent of this objective's in-window probability in the acquisition, and its weight in the
            scalar objective (summed violations).
        scale: Property units per unit of violation (distance outside the window / scale is the violation).
        condition: Pass the window's target to the decoder as a property condition of this name (the decoder
            must be conditioned on it); False leaves it to screening and selection only.
    """

    name: str = "band_gap"
    low: float | None = None
    high: float | None = None
    weight: float = 1.0
    scale: float = 1.0
    condition: bool = True

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise ValueError(f"objective {self.name!r}: give low, high or both")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"objective {self.name!r}: low {self.low} > high {self.high}")
        if self.scale <= 0 or self.weight < 0:
            raise ValueError(f"objective {self.name!r}: scale must be > 0 and weight >= 0")

    @property
    def target(self) -> float:
        """The value asked of the decoder: the window's middle, or one scale inside a one-sided bound."""
        if self.low is not None and self.high is not None:
            return 0.5 * (self.low + self.high)
        return self.low + self.scale if self.low is not None else self.high - self.scale


@register_config
@dataclass
class ChemistryConstraints:
    """Which compositions a candidate may have (checked first in the screen).

    Attributes:
        elements: The chemical system: every element of a candidate must be one of these (None: any element).
        required: Elements every candidate must contain.
        excluded: Elements no candidate may contain (toxic, scarce, radioactive, ...).
        min_elements: Fewest distinct elements.
        max_elements: Most distinct elements (None: no limit).
        max_atoms: Most atoms in the cell (None: no limit).
    """

    elements: list[str] | None = None
    required: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    min_elements: int = 1
    max_elements: int | None = None
    max_atoms: int | None = None


@register_config
@dataclass
class BudgetConfig:
    """When the loop stops (whichever limit comes first; limits hold across resumes).

    Attributes:
        max_rounds: Rounds of propose -> screen -> score -> oracle -> update.
        samples_per_round: Crystals generated per round.
        oracle_per_round: Candidates sent to the oracle per round (the shortlist size).
        max_oracle_calls: Oracle calls in total (one call = one candidate scored for stability and properties).
        max_samples: Crystals generated in total (None: max_rounds x samples_per_round).
        max_potential_evaluations: CHGNet energy(+force) evaluations in total, relaxation steps and hull
            references included (None: no limit).
        max_wall_time_s: Seconds of loop time in total, summed over resumed sessions (None: no limit).
    """

    max_rounds: int = 10
    samples_per_round: int = 64
    oracle_per_round: int = 8
    max_oracle_calls: int = 64
    max_samples: int | None = None
    max_potential_evaluations: int | None = None
    max_wall_time_s: float | None = None


@register_config
@dataclass
class StrategyConfig:
    """How candidates are proposed and which of them reach the oracle.

    Attributes:
        kind: "random": unconditional samples (the prompt only, if any); "conditional": the objectives' targets
            as the decoder's property condition; "cmaes": CMA-ES over the standardised property-condition vector
            (the input the decoder's `ConditionEncoder` embeds into condition tokens), scored by the surrogate.
        selection: "acquisition": the shortlist is the screened candidates with the highest surrogate
            acquisition; "random": a seeded random draw of screened candidates (the baselines' rule).
        prompt: Text prompt for text-conditioned decoders (None: no text condition).
        guidance: Classifier-free guidance scale of the decoder (monitors may lower it to restore diversity).
        steps: Reverse-diffusion steps per sample.
        restrict_elements: Draw atom types only from `chemistry.elements` (the decoder's type logits of other
            elements are masked at every reverse step), instead of filtering an unconstrained decoder's samples
            after the fact (which keeps ~1-3 % of an MP-20 decoder's samples for a 10-element system).
        batch_size: Crystals per reverse loop; all proposals of a round share the loops when the generator has
            `sample_requests` (one crystal per request, mixed conditions).
        population: CMA-ES population size lambda (None: 4 + floor(3 ln d), Hansen's default).
        sigma0: Initial CMA-ES step size, in standard deviations of the training property distribution.
        bounds: The condition vector is kept within +-bounds standard deviations of the training mean.
        condition_stats: {property: {"mean": m, "std": s}} to standardise condition values; None reads the
            decoder's normalisation (`generator.model.normalization["properties"]`).
        active_learning: Fine-tune the surrogate on every oracle-scored candidate after each round.
        finetune_steps: Fine-tuning steps per update (`PropertyModel.fine_tune`).
        finetune_lr: Fine-tuning learning rate.
        finetune_decoder: Also fine-tune the decoder on accepted candidates (S.U.N. hits, conditioned on their oracle
            values) after each round with hits: `DecoderFineTuner` (mmcrystal/design/decoder_update.py), or the
            `decoder_update` callable given to `run_design`.
        decoder_steps: Optimiser steps per decoder update.
        decoder_lr: Learning rate of decoder updates (small: nudge the decoder, do not retrain it).
        decoder_batch_size: Crystals per decoder-update step, drawn from every hit so far.
    """

    kind: Literal["random", "conditional", "cmaes"] = "cmaes"
    selection: Literal["acquisition", "random"] = "acquisition"
    prompt: str | None = None
    guidance: float = 2.0
    steps: int = 50
    restrict_elements: bool = True
    batch_size: int = 256
    population: int | None = None
    sigma0: float = 0.5
    bounds: float = 3.0
    condition_stats: dict[str, dict[str, float]] | None = None
    active_learning: bool = True
    finetune_steps: int = 50
    finetune_lr: float = 1e-3
    finetune_decoder: bool = False
    decoder_steps: int = 20
    decoder_lr: float = 1e-5
    decoder_batch_size: int = 16


@register_config
@dataclass
class ScreenConfig:
    """The staged screen, cheapest first: chemistry -> structural validity -> SMACT -> uniqueness -> novelty.

    Attributes:
        require_smact: Reject compositions that fail SMACT charge neutrality + electronegativity (a monitor may
            switch this on when stable candidates turn out not to be charge balanced).
        require_unique: Reject candidates that match an earlier candidate of this run (any round).
        require_novel: Reject candidates that match a training structure.
        min_distance: Smallest allowed interatomic distance in Å.
        ltol: StructureMatcher fractional length tolerance.
        stol: StructureMatcher site tolerance.
        angle_tol: StructureMatcher angle tolerance in degrees.
    """

    require_smact: bool = True
    require_unique: bool = True
    require_novel: bool = True
    min_distance: float = 0.5
    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0


@register_config
@dataclass
class SurrogateConfig:
    """The surrogate ensemble that scores screened candidates with uncertainty.

    Attributes:
        models: Folders of `PropertyPredictor`s (several form one ensemble). Empty: a bootstrap ridge ensemble on
            composition features, trained on the labelled structures of `DesignConfig.reference`.
        members: Members of the ridge ensemble.
        alpha: Ridge penalty (on standardised features).
        max_train: At most this many reference structures train the ridge ensemble (seeded subset).
        residual_std: {property: sigma} in property units, added in quadrature to the std of `models` (their
            irreducible error: about 1.25 x a held-out MAE for Gaussian errors). One fine-tuned model without MC
            dropout reports zero spread; without this its acquisition is a step function and the exploitation
            monitor's z-score is undefined (the monitor then says so instead of firing).
        mc_samples: MC-dropout passes of `models` (0: the ensemble spread only).
    """

    models: list[str] = field(default_factory=list)
    members: int = 8
    alpha: float = 1.0
    max_train: int | None = 5000
    residual_std: dict[str, float] = field(default_factory=dict)
    mc_samples: int = 0


@register_config
@dataclass
class OracleConfig:
    """The independent judge of shortlisted candidates: CHGNet stability against a hull, and a held-out property
    model trained separately from the surrogate.

    Attributes:
        property_models: Folders of held-out `PropertyPredictor`s. Empty: a ridge ensemble on composition and
            structure features trained on `property_reference` (which must not be the surrogate's data).
        property_reference: Labelled structures for the fallback property oracle.
        stability: "chgnet" (E_hull from CHGNet energies against a self-consistent hull of the training
            structures) or "none" (no stability judgement: every candidate counts as stable).
        e_hull_max: Candidates with E_hull <= this (eV/atom) are stable (the S of S.U.N.).
        e_hull_min: Candidates with E_hull below this (eV/atom) are not counted as stable (None: no floor). Far
            below a hull usually means the hull misses a competing phase (a partial training copy) or the potential
            relaxed the candidate into an artefact, not a new ground state; the value is kept in the row either way.
        relax: Relax candidates with CHGNet before taking the energy (else single points).
        fmax: Relaxation force threshold in eV/Å.
        relax_steps: Most relaxation steps per candidate.
        hull_reference: Structures of the hull (None: `DesignConfig.reference`).
        elemental_prototypes: Add ASE's elemental reference crystals to the hull.
        device: Torch device of the potential.
    """

    property_models: list[str] = field(default_factory=list)
    property_reference: list[str] | None = None
    stability: Literal["chgnet", "none"] = "chgnet"
    e_hull_max: float = 0.1
    e_hull_min: float | None = None
    relax: bool = True
    fmax: float = 0.1
    relax_steps: int = 200
    hull_reference: list[str] | None = None
    elemental_prototypes: bool = True
    max_hull_elements: int = 6
    device: str = "cpu"


@register_config
@dataclass
class MonitorConfig:
    """Failure-mode monitors: what each measures, when it fires, and what it does then.

    Attributes:
        exploitation_max_z: Surrogate exploitation fires when the mean |surrogate - oracle| / surrogate std over
            the shortlist exceeds this (a calibrated ensemble gives about 0.8).
        disagreement_max_ratio: ... or when the mean ensemble std of the shortlist exceeds this multiple of the
            median std over all screened candidates (selection chases the ensemble's disagreement).
        min_uniqueness: Diversity collapse fires when the unique fraction of valid candidates falls below this ...
        min_spread_ratio: ... or when their fingerprint spread falls below this fraction of the first round's.
        knn: Neighbours of the density estimate (distance to the k-th nearest training point).
        shift_quantile: A candidate is out of distribution when its k-NN distance exceeds this quantile of the
            training points' own (leave-one-out) k-NN distances.
        max_shift_fraction: Distribution shift fires when more than this fraction of valid candidates is out of
            distribution.
        features: Feature space of the spread and density estimates: "composition" (Magpie-style composition
            fingerprint, standardised with training statistics) or "aligned" (the aligned model's L2-normalised
            crystal embedding, the shared latent space).
        aligned_model: Folder of the aligned model for features="aligned".
        max_stable_not_smact: Stability-synthesizability gap fires when more than this fraction of stable
            oracle-scored candidates fails SMACT ...
        min_stable_rate: ... or when fewer than this fraction of oracle-scored candidates is stable.
        actions: Per monitor ("exploitation", "diversity", "shift", "synthesizability"): "warn" (report only),
            "steer" (change the loop: see `mmcrystal.design.monitors`) or "stop" (end the run); a monitor not
            named here only warns.
    """

    exploitation_max_z: float = 3.0
    disagreement_max_ratio: float = 3.0
    min_uniqueness: float = 0.5
    min_spread_ratio: float = 0.5
    knn: int = 5
    shift_quantile: float = 0.95
    max_shift_fraction: float = 0.5
    features: Literal["composition", "aligned"] = "composition"
    aligned_model: str | None = None
    max_stable_not_smact: float = 0.5
    min_stable_rate: float = 0.0
    actions: dict[str, str] = field(
        default_factory=lambda: {
            "exploitation": "steer",
            "diversity": "steer",
            "shift": "steer",
            "synthesizability": "warn",
        }
    )

    def __post_init__(self) -> None:
        for name, action in self.actions.items():
            if name not in MONITOR_NAMES or action not in ("warn", "steer", "stop"):
                raise ValueError(f"monitor action {name}={action!r}: names {MONITOR_NAMES}, actions warn/steer/stop")


@register_config
@dataclass
class DesignConfig:
    """One design run (the arguments of `mmcrystal design`).

    Attributes:
        out: Run folder (reuse it to resume an interrupted run).
        decoder: Folder of a trained decoder (`CrystalGenerator.from_pretrained`).
        reference: Training structures (files or prepared folders): novelty, hull, density baseline and the
            default surrogate's labels.
        objectives: Property windows; a hit is in every window, stable, unique and novel.
        chemistry: Composition constraints.
        budget: Limits.
        strategy: Proposal and selection.
        screen: Staged screen.
        surrogate: Surrogate ensemble.
        oracle: Oracle.
        monitors: Failure-mode monitors.
        seed: Run seed; every round's randomness derives from it.
        device: Torch device of the decoder and the property models.
        cache_dir: Cache of reference indices and hull energies (None: the evaluation default).
    """

    out: str = "runs/design"
    decoder: str | None = None
    reference: list[str] = field(default_factory=list)
    objectives: list[PropertyObjective] = field(default_factory=list)
    chemistry: ChemistryConstraints = field(default_factory=ChemistryConstraints)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    monitors: MonitorConfig = field(default_factory=MonitorConfig)
    seed: int = 0
    device: str = "cpu"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.objectives:
            raise ValueError("a design run needs at least one property objective")
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"one objective per property, got {names}")

    @property
    def property_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def conditioned(self) -> list[PropertyObjective]:
        """Objectives passed to the decoder as property conditions."""
        return [o for o in self.objectives if o.condition]
