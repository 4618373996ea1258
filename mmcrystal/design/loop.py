"""`DesignLoop`: propose -> staged screen -> surrogate scores -> shortlist -> oracle -> update -> monitors.

One round k, all randomness drawn from seeds derived from (run seed, k), so a resumed run equals an uninterrupted
one:

    proposals = proposer.ask(n)                      # conditions (CMA-ES points, the targets, or none)
    crystals  = generator.sample(condition_i, seed_ki) for each proposal i   (one sample_requests call over all
                                                     proposals when the generator has it; atom types drawn from
                                                     the chemical system when strategy.restrict_elements)
    rows      = screen(crystals)                     # chemistry, validity, SMACT, uniqueness, novelty
    mean, std = surrogate.predict(passed)            # acquisition = P(in every window)
    shortlist = top-m by acquisition (or random)     # m = oracle_per_round, within the oracle budget
    oracle(shortlist)                                # E_hull, held-out property values -> S.U.N., hits
    proposer.tell(score of each proposal's crystals)  # mean acquisition - 0.1 x mean surrogate violation
    surrogate = base.fine_tune(every oracle-scored candidate so far)   # active learning
    monitors -> warn / steer / stop; store the round table and the state

Row decisions: `decision` is "screen:<reason>", "unjudgeable:<reason>" (the oracle could not score it, e.g. no
elemental end point for the hull: no call is spent on it), "skipped_ood", "not_selected", "hit" or
"oracle:<why not>" ("oracle:miss" when it was judged and missed).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mmcrystal.design.config import DesignConfig
from mmcrystal.design.monitors import (
    DensityReference,
    distribution_shift,
    diversity_collapse,
    feature_spread,
    steer,
    surrogate_exploitation,
    synthesizability_gap,
)
from mmcrystal.design.objectives import acquisition, in_targets, objective_violation
from mmcrystal.design.proposers import build_proposer
from mmcrystal.design.screen import CandidateScreen
from mmcrystal.design.store import LoopState, RunStore

__all__ = ["DesignLoop", "derive_seed"]

log = logging.getLogger(__name__)

VIOLATION_WEIGHT = 0.1  # proposer score per unit of mean surrogate violation (window scales)
EMPTY_GROUP_VIOLATION = 10.0  # violation charged to a proposal none of whose crystals passed the screen


def derive_seed(seed: int, *parts: Any) -> int:
    """An independent 56-bit seed for (run seed, parts...)."""
    digest = hashlib.sha256(":".join(["mmcrystal-design", str(int(seed)), *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:7], "little")


def _columns(model, names: Sequence[str], what: str) -> list[int]:
    known = list(model.property_names)
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"the {what} predicts {known}, not the objectives' {missing}")
    return [known.index(n) for n in names]


class DesignLoop:
    """The closed loop of one run (module docstring).

    Args:
        config: `DesignConfig`.
        generator: Anything with `sample(prompt=, properties=, n=, steps=, guidance=, seed=)` -> Structures.
        surrogate: The base surrogate `PropertyModel` (active learning fine-tunes copies of it).
        oracle: An `Oracle` (`evaluate`, `counters`).
        screen: `CandidateScreen`.
        density: Training-density reference for the shift monitor (None: not monitored).
        featurize: Structures -> `(N, F)` features of the diversity and shift monitors.
        decoder_update: Optional `(generator, structures, oracle_rows) -> generator` called after each round with
            the round's hits (decoder fine-tuning, e.g. `DecoderFineTuner`); needed when
            `strategy.finetune_decoder` is set. On resume it is called again for the finished rounds, in order, so
            a deterministic update rebuilds the same decoder.
        on_round_end: Optional `callback(round, summary)` after each stored round (progress, interruption tests).
    """

    def __init__(self, config: DesignConfig, generator, surrogate, oracle, screen: CandidateScreen,
                 density: DensityReference | None, featurize: Callable, decoder_update: Callable | None = None,
                 on_round_end: Callable[[int, dict], None] | None = None) -> None:  # fmt: skip
        if config.strategy.finetune_decoder and decoder_update is None:
            raise ValueError("strategy.finetune_decoder needs a decoder_update (run_design builds DecoderFineTuner "
                             "for a CrystalGenerator)")  # fmt: skip
        self.cfg, self.generator, self.base_surrogate, self.oracle = config, generator, surrogate, oracle
        self.screen, self.density, self.featurize = screen, density, featurize
        self.decoder_update, self.on_round_end = decoder_update, on_round_end
        self.names = config.property_names
        self.sur_cols = _columns(surrogate, self.names, "surrogate")
        self.store = RunStore(config.out, config)
        self.labelled: list[tuple[Any, list[float]]] = []  # (structure, oracle values in objective order)

    # ------------------------------------------------------------------------------------------------ resuming
    def _restore(self, state: LoopState) -> None:
        """Screen memory and active-learning data of the finished rounds."""
        for k in range(state.round):
            rows, structures = self.store.load_rows(k), self.store.load_structures(k)
            firsts = [r["id"] for r in rows if r.get("unique") is True]
            self.screen.remember(firsts, [structures[i] for i in firsts])
            self.labelled += [(structures[r["id"]], [r[n] for n in self.names]) for r in rows if r.get("selected")
                              and r.get("oracle_status") == "ok"]  # fmt: skip
            if self.decoder_update is not None:  # replay the finished rounds' decoder updates
                hits = [r for r in rows if r.get("hit")]
                self.generator = self.decoder_update(self.generator, [structures[r["id"]] for r in hits], hits)

    def _surrogate(self, k: int):
        if not (self.cfg.strategy.active_learning and self.labelled):
            return self.base_surrogate
        structures = [s for s, _ in self.labelled]
        targets = np.full((len(structures), len(self.base_surrogate.property_names)), np.nan)
        targets[:, self.sur_cols] = np.array([v for _, v in self.labelled], dtype=float)
        st = self.cfg.strategy
        return self.base_surrogate.fine_tune(structures, targets, st.finetune_steps, st.finetune_lr,
                                             derive_seed(self.cfg.seed, "finetune", k))  # fmt: skip

    def _budget_reason(self, state: LoopState) -> str:
        b = self.cfg.budget
        limits = [
            (state.round >= b.max_rounds, "rounds"),
            (state.oracle_calls >= b.max_oracle_calls, "oracle_calls"),
            (b.max_samples is not None and state.samples >= b.max_samples, "samples"),
            (b.max_potential_evaluations is not None and state.potential_evaluations >= b.max_potential_evaluations,
             "potential_evaluations"),
            (b.max_wall_time_s is not None and state.elapsed_s >= b.max_wall_time_s, "wall_time"),
        ]  # fmt: skip
        return next((f"budget:{name}" for hit, name in limits if hit), "")

    # -------------------------------------------------------------------------------------------------- a round
    def _propose(self, k: int, state: LoopState, proposer) -> tuple[list, list[dict], list]:
        b, st = self.cfg.budget, self.cfg.strategy
        n = b.samples_per_round if b.max_samples is None else min(b.samples_per_round, b.max_samples - state.samples)
        proposals = proposer.ask(n)
        constraint, chem = {}, self.cfg.chemistry
        if st.restrict_elements and chem.elements:
            constraint = {"elements": [el for el in chem.elements if el not in set(chem.excluded)]}
        if len(proposals) > 1 and hasattr(self.generator, "sample_requests"):
            # every group of the round in the same reverse loops: one request per crystal, mixed conditions
            requests = [{"prompt": st.prompt, "properties": p.properties, **constraint} for p in proposals
                        for _ in range(p.n)]  # fmt: skip
            flat = self.generator.sample_requests(requests, steps=st.steps, guidance=state.guidance,
                                                  seed=derive_seed(self.cfg.seed, k), batch_size=st.batch_size)  # fmt: skip
            if len(flat) != len(requests):
                raise RuntimeError(f"round {k}: the generator returned {len(flat)} crystals for {len(requests)}")
            bounds = np.cumsum([0] + [p.n for p in proposals])
            groups = [flat[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        else:
            groups = [self.generator.sample(prompt=st.prompt, properties=p.properties, n=p.n, steps=st.steps,
                                            guidance=state.guidance, seed=derive_seed(self.cfg.seed, k, p.index),
                                            **constraint) for p in proposals]  # fmt: skip
        structures, rows = [], []
        for p, sampled in zip(proposals, groups, strict=True):
            if len(sampled) != p.n:
                raise RuntimeError(f"round {k}: the generator returned {len(sampled)} crystals for n={p.n}")
            condition = {f"condition_{name}": v for name, v in (p.properties or {}).items()}
            for j, structure in enumerate(sampled):
                rows.append({"id": f"r{k:04d}-g{p.index:02d}-{j:04d}", "round": k, "group": p.index, **condition})
                structures.append(structure)
        return proposals, rows, structures

    def _score(self, rows: list[dict], structures: list, surrogate, state: LoopState) -> None:
        passed = [i for i, r in enumerate(rows) if r["passed"]]
        for r in rows:
            r["acquisition"] = 0.0
        if passed:
            mean, std = surrogate.predict([structures[i] for i in passed])
            means = {n: mean[:, c] for n, c in zip(self.names, self.sur_cols, strict=True)}
            stds = {n: std[:, c] for n, c in zip(self.names, self.sur_cols, strict=True)}
            acq = acquisition(means, stds, self.cfg.objectives, state.std_inflation)
            for j, i in enumerate(passed):
                for n in self.names:
                    rows[i][f"sur_{n}_mean"], rows[i][f"sur_{n}_std"] = float(means[n][j]), float(stds[n][j])
                rows[i]["acquisition"] = float(acq[j])
                predicted = {n: float(means[n][j]) for n in self.names}
                rows[i]["sur_violation"] = objective_violation(predicted, self.cfg.objectives)

    def _group_scores(self, rows: list[dict], proposals) -> list[float]:
        """Score of each proposal for the proposer: the mean acquisition of its crystals (0 for screen failures)
        minus VIOLATION_WEIGHT x the mean surrogate violation of those that passed (EMPTY_GROUP_VIOLATION when
        none did). The second term gives CMA-ES a slope where every in-window probability is ~0."""
        scores = []
        for p in proposals:
            group = [r for r in rows if r["group"] == p.index]
            violations = [r["sur_violation"] for r in group if r["passed"] and math.isfinite(r["sur_violation"])]
            violation = float(np.mean(violations)) if violations else EMPTY_GROUP_VIOLATION
            scores.append(float(np.mean([r["acquisition"] for r in group])) - VIOLATION_WEIGHT * violation)
        return scores

    def _monitor_features(self, rows: list[dict], structures: list, state: LoopState) -> tuple[float, np.ndarray]:
        """Spread of the valid candidates; k-NN distance of each (written to the rows as knn_distance, ood)."""
        valid = [i for i, r in enumerate(rows) if "unique" in r]
        if not valid:
            return math.nan, np.zeros(0)
        features = self.featurize([structures[i] for i in valid])
        spread = feature_spread(features, self.density if self.cfg.monitors.features == "composition" else None)
        knn = self.density.knn_distance(features) if self.density is not None else np.zeros(0)
        for j, i in enumerate(valid):
            if self.density is not None:
                rows[i]["knn_distance"], rows[i]["ood"] = float(knn[j]), bool(knn[j] > self.density.cut)
        return spread, knn

    def _select(self, k: int, rows: list[dict], structures: list, state: LoopState) -> list[int]:
        judgeable = getattr(self.oracle, "judgeable", None)
        for i, r in enumerate(rows):
            if r["passed"] and judgeable is not None:
                r["unjudgeable"] = judgeable(structures[i])
        eligible = [i for i, r in enumerate(rows) if r["passed"] and not r.get("unjudgeable")
                    and not (state.ood_filter and r.get("ood"))]  # fmt: skip
        m = min(self.cfg.budget.oracle_per_round, self.cfg.budget.max_oracle_calls - state.oracle_calls)
        if m <= 0 or not eligible:
            return []
        if self.cfg.strategy.selection == "random":
            rng = np.random.default_rng(derive_seed(self.cfg.seed, "select", k))
            return sorted(rng.choice(eligible, size=min(m, len(eligible)), replace=False).tolist())
        order = sorted(eligible, key=lambda i: (-rows[i]["acquisition"], i))
        return sorted(order[:m])

    def _judge(self, rows: list[dict], structures: list, shortlist: list[int]) -> None:
        e_hull_max = self.cfg.oracle.e_hull_max
        results = self.oracle.evaluate([structures[i] for i in shortlist])
        for i, result in zip(shortlist, results, strict=True):
            row = rows[i]
            row.update({key: result.get(key) for key in ("e_final", "e_hull", "hull_status", "oracle_status",
                                                         "relax_steps")})  # fmt: skip
            row.update({n: float(result.get(n, math.nan)) for n in self.names})
            ok = result.get("oracle_status") == "ok"
            values = {n: row[n] for n in self.names}
            row["violation"] = objective_violation(values, self.cfg.objectives)
            row["in_target"] = ok and in_targets(values, self.cfg.objectives)
            e_hull = math.nan if row["e_hull"] is None else float(row["e_hull"])
            floor = self.cfg.oracle.e_hull_min
            row["stable"] = ok and math.isfinite(e_hull) and e_hull <= e_hull_max and (floor is None or e_hull >= floor)
            row["sun"] = row["stable"] and bool(row.get("unique")) and bool(row.get("novel"))
            row["hit"] = row["sun"] and row["in_target"]
            row["decision"] = "hit" if row["hit"] else ("oracle:miss" if ok else f"oracle:{row['oracle_status']}")
            if ok:
                self.labelled.append((structures[i], [row[n] for n in self.names]))

    def run_round(self, k: int, state: LoopState, proposer, surrogate) -> tuple[list[dict], list, dict]:
        """Propose, screen, score, select, judge and tell one round; returns (rows, structures, summary)."""
        proposals, rows, structures = self._propose(k, state, proposer)
        for row, screened in zip(rows, self.screen.screen([r["id"] for r in rows], structures, state.require_smact),
                                 strict=True):  # fmt: skip
            row.update(screened)
        self._score(rows, structures, surrogate, state)
        spread, knn = self._monitor_features(rows, structures, state)
        shortlist = self._select(k, rows, structures, state)
        for i, row in enumerate(rows):
            row["selected"] = i in shortlist
            if not row["passed"]:
                row["decision"] = f"screen:{row['screen_reject']}"
            elif row.get("unjudgeable"):
                row["decision"] = f"unjudgeable:{row['unjudgeable']}"
            else:
                row["decision"] = "skipped_ood" if state.ood_filter and row.get("ood") else "not_selected"
        self._judge(rows, structures, shortlist)
        proposer.tell(proposals, self._group_scores(rows, proposals))
        if state.spread_baseline is None and math.isfinite(spread):
            state.spread_baseline = spread
        selected = [rows[i] for i in shortlist]
        readings = [
            surrogate_exploitation(selected, [r for r in rows if r["passed"]], self.names, self.cfg.monitors),
            diversity_collapse(rows, spread, state.spread_baseline, self.cfg.monitors),
            distribution_shift(knn, self.density.cut if self.density else math.inf, self.cfg.monitors),
            synthesizability_gap(selected, self.cfg.oracle.e_hull_max, self.cfg.monitors),
        ]
        summary = {
            "round": k,
            "samples": len(rows),
            "passed": sum(r["passed"] for r in rows),
            "oracle_calls": len(shortlist),
            "stable": sum(bool(r.get("stable")) for r in selected),
            "in_target": sum(bool(r.get("in_target")) for r in selected),
            "sun": sum(bool(r.get("sun")) for r in selected),
            "hits": sum(bool(r.get("hit")) for r in selected),
            "mean_acquisition": float(np.mean([r["acquisition"] for r in rows])) if rows else math.nan,
            "best_violation": min(
                (r["violation"] for r in selected if math.isfinite(r["violation"])), default=math.nan
            ),
            "condition": [p.properties for p in proposals],
            "center": proposer.center() if hasattr(proposer, "center") else None,
            "guidance": state.guidance,
            "std_inflation": state.std_inflation,
            "monitors": [m.as_dict() for m in readings],
        }
        summary["steering"] = steer(readings, state, proposer)
        return rows, structures, summary

    # ----------------------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Run (or resume) until a budget limit or a monitor stops the loop; returns the final `LoopState` dict."""
        cfg = self.cfg
        state = self.store.load_state() or LoopState(guidance=cfg.strategy.guidance,
                                                     require_smact=cfg.screen.require_smact)  # fmt: skip
        proposer = build_proposer(cfg.strategy, cfg.objectives, self.generator, derive_seed(cfg.seed, "proposer"))
        if state.proposer:
            proposer.load_state_dict(state.proposer)
        if state.stopped.startswith("budget:"):
            state.stopped = ""  # the budget may have been raised
        self._restore(state)
        evaluations_before = state.potential_evaluations  # the oracle's counters start at 0 in every session
        while not state.stopped:
            state.stopped = self._budget_reason(state)
            if state.stopped:
                break
            k, start = state.round, time.perf_counter()
            rows, structures, summary = self.run_round(k, state, proposer, self._surrogate(k))
            if self.decoder_update is not None:
                hits = [i for i, r in enumerate(rows) if r.get("hit")]
                self.generator = self.decoder_update(self.generator, [structures[i] for i in hits],
                                                     [rows[i] for i in hits])  # fmt: skip
            state.round, state.samples = k + 1, state.samples + summary["samples"]
            state.oracle_calls += summary["oracle_calls"]
            spent = float(self.oracle.counters().get("potential_evaluations", 0.0))
            state.potential_evaluations = evaluations_before + spent
            state.elapsed_s += time.perf_counter() - start
            state.proposer = proposer.state_dict()
            state.history.append({**summary, "elapsed_s": state.elapsed_s})
            self.store.write_round(k, rows, structures)
            self.store.save_state(state)
            log.info("design round %d: %d samples, %d passed, %d oracle calls, %d S.U.N., %d hits",
                     k, summary["samples"], summary["passed"], summary["oracle_calls"], summary["sun"],
                     summary["hits"])  # fmt: skip
            if self.on_round_end is not None:
                self.on_round_end(k, summary)
        self.store.save_state(state)
        log.info("design stopped: %s", state.stopped)
        return {"stopped": state.stopped, "rounds": state.round, "oracle_calls": state.oracle_calls,
                "samples": state.samples, "hits": sum(h["hits"] for h in state.history),
                "sun": sum(h["sun"] for h in state.history), "out": str(self.store.out)}  # fmt: skip
