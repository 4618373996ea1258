"""Loop options: two objectives and their Pareto front in the report, candidates the oracle cannot judge, the
decoder-update hook."""

from __future__ import annotations

import pytest
from design_toys import WINDOW, ToyGenerator, ToyOracle
from design_toys import run_toy as _run
from design_toys import toy_config as _config
from pymatgen.core import Composition

from mmcrystal.design.config import BudgetConfig, PropertyObjective, StrategyConfig
from mmcrystal.design.report import pareto_rows
from mmcrystal.design.store import RunStore


def test_two_objectives_give_a_pareto_front(tmp_path, toy_reference):
    small = PropertyObjective(name="atoms", high=6.0, scale=2.0, condition=False)
    cfg = _config(tmp_path / "pareto", toy_reference, objectives=[WINDOW, small],
                  budget=BudgetConfig(max_rounds=2, samples_per_round=16, oracle_per_round=6))  # fmt: skip
    _run(cfg)
    rows = RunStore.reader(tmp_path / "pareto").all_rows(2)
    scored = [r for r in rows if r["selected"]]
    front = pareto_rows(rows, cfg)
    assert 1 <= len(front) <= len(scored) == 12
    violations = [(max(0.0, abs(r["band_gap"] - 3.0) - 0.1), max(0.0, r["atoms"] - 6.0), r["e_hull"]) for r in scored]
    for r, v in zip(scored, violations, strict=True):
        dominated = any(all(a <= b for a, b in zip(w, v, strict=True)) and w != v for w in violations)
        assert (r in front) == (not dominated)
    assert (tmp_path / "pareto" / "plots" / "pareto_objectives.png").exists()
    assert "| atoms |" in (tmp_path / "pareto" / "report.md").read_text()


def test_no_oracle_call_is_spent_on_what_the_oracle_cannot_judge(tmp_path, toy_reference):
    class NoIodides(ToyOracle):
        def judgeable(self, structure):
            return "no elemental end point for I" if "I" in structure.composition.as_dict() else ""

    cfg = _config(tmp_path / "j", toy_reference, budget=BudgetConfig(max_rounds=2, samples_per_round=24,
                                                                      oracle_per_round=8))  # fmt: skip
    _run(cfg, oracle=NoIodides())
    rows = RunStore.reader(tmp_path / "j").all_rows(2)
    iodides = [r for r in rows if r["passed"] and "I" in Composition(r["formula"]).as_dict()]
    assert iodides and all(r["decision"] == "unjudgeable:no elemental end point for I" for r in iodides)
    assert not any(r["selected"] for r in iodides) and sum(r["selected"] for r in rows) == 16


def test_decoder_update_hook_gets_each_rounds_hits(tmp_path, toy_reference):
    cfg = _config(tmp_path / "d", toy_reference, strategy=StrategyConfig(kind="cmaes", finetune_decoder=True),
                  budget=BudgetConfig(max_rounds=2, samples_per_round=8, oracle_per_round=2))  # fmt: skip
    with pytest.raises(ValueError, match="decoder_update"):  # the toy decoder has no training loss
        _run(cfg)
    calls = []

    def update(generator, structures, rows):
        calls.append((len(structures), [r["hit"] for r in rows]))
        return generator

    _run(cfg, decoder_update=update)
    assert len(calls) == 2 and all(all(hits) for _, hits in calls)


class _BatchingToy(ToyGenerator):
    """The toy decoder with `sample_requests` (one crystal per request), recording the calls and constraints."""

    def __init__(self) -> None:
        super().__init__()
        self.batched, self.constraints = [], []

    def sample(self, prompt=None, properties=None, n=16, steps=50, guidance=2.0, seed=0, **extra):
        self.constraints.append(extra.get("elements"))
        return super().sample(prompt, properties, n, steps, guidance, seed)

    def sample_requests(self, requests, steps=50, guidance=2.0, seed=0, batch_size=64):
        self.batched.append(len(requests))
        self.constraints += [r.get("elements") for r in requests]
        return [super(_BatchingToy, self).sample(properties=r["properties"], n=1, guidance=guidance, seed=seed + i)[0]
                for i, r in enumerate(requests)]  # fmt: skip


def test_round_samples_in_one_batched_call_with_the_chemical_system(tmp_path, toy_reference):
    from dataclasses import replace

    from design_toys import ToySurrogate

    from mmcrystal.design.config import ChemistryConstraints
    from mmcrystal.design.run import run_design

    chemistry = ChemistryConstraints(elements=["Na", "K", "Rb", "F", "Cl", "Br", "I"], excluded=["Rb"])
    cfg = _config(tmp_path / "b", toy_reference, chemistry=chemistry,
                  budget=BudgetConfig(max_rounds=2, samples_per_round=12, oracle_per_round=2))  # fmt: skip
    toy = _BatchingToy()
    run_design(cfg, toy, ToySurrogate(), ToyOracle())
    assert toy.batched == [12, 12]  # every CMA-ES group of a round in one call
    assert toy.constraints == [["Na", "K", "F", "Cl", "Br", "I"]] * 24  # less the excluded Rb
    rows = RunStore.reader(tmp_path / "b").all_rows(2)
    assert len({r["group"] for r in rows}) > 1 and len(rows) == 24
    # the constraint can be switched off (then the screen alone enforces the system); one group: plain sample()
    plain = _BatchingToy()
    cfg = replace(cfg, out=str(tmp_path / "c"), strategy=StrategyConfig(kind="conditional", restrict_elements=False))
    run_design(cfg, plain, ToySurrogate(), ToyOracle())
    assert plain.batched == [] and plain.constraints == [None, None]


def test_e_hull_floor_keeps_far_below_hull_candidates_out_of_sun(tmp_path, toy_reference):
    from dataclasses import replace

    from mmcrystal.design.config import OracleConfig

    budget = BudgetConfig(max_rounds=2, samples_per_round=16, oracle_per_round=4)
    plain = _config(tmp_path / "plain", toy_reference, budget=budget)
    _run(plain)
    floored = replace(plain, out=str(tmp_path / "floor"), oracle=OracleConfig(stability="none", e_hull_min=0.01))
    _run(floored)  # the toy oracle puts non-iodides exactly on the hull (0.0 eV/atom): below the 0.01 floor
    rows = {name: RunStore.reader(tmp_path / name).all_rows(2) for name in ("plain", "floor")}
    assert sum(r["sun"] for r in rows["plain"] if r["selected"]) > 0
    scored = [r for r in rows["floor"] if r["selected"]]
    assert scored and not any(r["stable"] or r["hit"] for r in scored)
    assert all(r["e_hull"] is not None for r in scored)  # the value stays in the table
