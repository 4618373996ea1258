"""The closed loop on a toy problem with a known optimum: it converges where plain conditional sampling misses,
an interrupted run resumes to exactly the uninterrupted result, a biased surrogate trips the exploitation monitor,
budgets hold, and every candidate is stored with its decision."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from design_toys import WINDOW, ToyOracle, ToySurrogate, optimum_condition, response
from design_toys import run_toy as _run
from design_toys import toy_config as _config

from mmcrystal.design.config import BudgetConfig, MonitorConfig, StrategyConfig


def _state(out) -> dict:
    return json.loads((out / "state.json").read_text())


def test_loop_converges_to_the_known_optimum_where_conditional_sampling_misses(tmp_path, toy_reference):
    loop = _run(_config(tmp_path / "loop", toy_reference))
    history = _state(tmp_path / "loop")["history"]
    best = optimum_condition(3.0)  # 4.0: the toy decoder answers condition c with 0.5 c + 1
    assert response(WINDOW.target) < WINDOW.low  # asking for the target itself misses the window
    assert history[-1]["center"]["band_gap"] == pytest.approx(best, abs=0.4)
    assert abs(history[-1]["center"]["band_gap"] - best) < abs(history[0]["center"]["band_gap"] - best)
    late_hits = sum(h["hits"] for h in history[-4:])
    assert late_hits >= 10 and late_hits > history[0]["hits"]  # of 16 oracle calls in the last 4 rounds

    baseline_budget = BudgetConfig(max_rounds=4, samples_per_round=24, oracle_per_round=8)  # 32 oracle calls too
    conditional = _run(
        _config(
            tmp_path / "conditional",
            toy_reference,
            budget=baseline_budget,
            strategy=StrategyConfig(kind="conditional", selection="random"),
        ),
        report=False,
    )
    unconditional = _run(
        _config(
            tmp_path / "random",
            toy_reference,
            budget=baseline_budget,
            strategy=StrategyConfig(kind="random", selection="random"),
        ),
        report=False,
    )
    assert conditional["oracle_calls"] == unconditional["oracle_calls"] == loop["oracle_calls"] == 32
    assert loop["hits"] > 3 * max(conditional["hits"], unconditional["hits"], 1)

    rows = [json.loads(line) for line in (tmp_path / "loop" / "rounds" / "round_0003.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and all(r["decision"] for r in rows) and sum(r["selected"] for r in rows) == 4
    assert {"condition_band_gap", "screen_reject", "acquisition", "sur_band_gap_mean"} <= set(rows[0])
    report = (tmp_path / "loop" / "report.md").read_text()
    assert "hits / 100 oracle calls" in report and (tmp_path / "loop" / "plots" / "monitors.png").exists()


def _without_timing(state: dict) -> dict:
    state = {k: v for k, v in state.items() if k != "elapsed_s"}
    state["history"] = [{k: v for k, v in h.items() if k != "elapsed_s"} for h in state["history"]]
    return state


def test_interrupted_loop_resumes_to_the_uninterrupted_result(tmp_path, toy_reference):
    budget = BudgetConfig(max_rounds=4, samples_per_round=16, oracle_per_round=3, max_oracle_calls=100)
    full = _config(tmp_path / "full", toy_reference, budget=budget)
    _run(full, ToySurrogate(bias=0.3))  # active learning on: the resumed run must rebuild the tuned surrogate
    cut = replace(full, out=str(tmp_path / "cut"))

    def stop_after_first(k, summary):
        if k == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(cut, ToySurrogate(bias=0.3), on_round_end=stop_after_first)
    with pytest.raises(RuntimeError, match="interrupted"):  # dies half-way through round 2 (5th oracle call)
        _run(cut, ToySurrogate(bias=0.3), ToyOracle(fail_at_call=5))
    assert _state(tmp_path / "cut")["round"] == 2
    _run(cut, ToySurrogate(bias=0.3))
    for k in range(4):
        name = f"rounds/round_{k:04d}.jsonl"
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "full" / name).read_text()
    assert _without_timing(_state(tmp_path / "cut")) == _without_timing(_state(tmp_path / "full"))


def test_biased_surrogate_trips_the_exploitation_monitor(tmp_path, toy_reference):
    stop = MonitorConfig(actions={"exploitation": "stop"})
    no_learning = StrategyConfig(kind="cmaes", sigma0=0.5, active_learning=False)
    biased = _run(_config(tmp_path / "biased", toy_reference, monitors=stop, strategy=no_learning),
                  ToySurrogate(bias=1.0))  # fmt: skip
    assert biased["stopped"] == "monitor:exploitation" and biased["rounds"] == 1
    reading = _state(tmp_path / "biased")["history"][0]["monitors"][0]
    assert reading["name"] == "exploitation" and reading["fired"] and reading["values"]["bias_band_gap"] > 0.9

    budget = BudgetConfig(max_rounds=3, samples_per_round=24, oracle_per_round=4)
    honest = _run(_config(tmp_path / "honest", toy_reference, monitors=stop, strategy=no_learning, budget=budget))
    assert honest["stopped"] == "budget:rounds"
    assert not any(m["fired"] for h in _state(tmp_path / "honest")["history"] for m in h["monitors"]
                   if m["name"] == "exploitation")  # fmt: skip

    # with active learning the oracle labels teach the surrogate its bias: the monitor fires once, then goes quiet
    _run(_config(tmp_path / "learning", toy_reference, budget=budget), ToySurrogate(bias=1.0))
    fired = [h["monitors"][0]["fired"] for h in _state(tmp_path / "learning")["history"]]
    assert fired == [True, False, False]
    assert _state(tmp_path / "learning")["std_inflation"] == 2.0  # the steering that came with it


def test_budgets_hold_and_can_be_raised_on_resume(tmp_path, toy_reference):
    cfg = _config(tmp_path / "b", toy_reference,
                  budget=BudgetConfig(max_rounds=10, samples_per_round=8, oracle_per_round=4, max_oracle_calls=10))  # fmt: skip
    first = _run(cfg)
    assert first["stopped"] == "budget:oracle_calls" and first["oracle_calls"] == 10 and first["rounds"] == 3
    more = _run(replace(cfg, budget=replace(cfg.budget, max_oracle_calls=14)))
    assert more["oracle_calls"] == 14 and more["rounds"] == 4
    with pytest.raises(ValueError, match="objectives"):
        _run(replace(cfg, objectives=[replace(WINDOW, high=3.3)]))
    samples = _run(_config(tmp_path / "s", toy_reference,
                           budget=BudgetConfig(max_rounds=10, samples_per_round=8, max_samples=20)))  # fmt: skip
    assert samples["samples"] == 20 and samples["stopped"] == "budget:samples"
