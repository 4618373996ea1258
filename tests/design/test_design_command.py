"""`mmcrystal design`: every recipe parses, --help comes from the signature, and the command runs end to end with a
real (tiny, untrained) decoder, a ridge surrogate and a ridge oracle on real MP-20 / MP-40 rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Composition

from mmcrystal.cli import main
from mmcrystal.config import config_from_dict, config_to_dict
from mmcrystal.design.config import DesignConfig, PropertyObjective
from mmcrystal.design.run import load_design_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted((CONFIGS / "design").glob("*.yaml")) + [CONFIGS / "tiny" / "design.yaml"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipes_parse_into_typed_configs(recipe):
    cfg = load_design_config(recipe)
    assert cfg.objectives and all(isinstance(o, PropertyObjective) for o in cfg.objectives)
    assert cfg.budget.max_oracle_calls > 0 and cfg.strategy.kind in ("random", "conditional", "cmaes")
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg  # the run folder's snapshot


def test_help_is_built_from_the_signature(capsys):
    with pytest.raises(SystemExit) as info:
        main(["design", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--config" in text and "--budget.max_oracle_calls" in text and "--strategy.kind" in text


def test_a_design_run_needs_an_objective():
    with pytest.raises(ValueError, match="objective"):
        DesignConfig()


SYSTEM = ["Mg", "Ti", "Zn", "O", "S"]


def test_design_command_end_to_end(tmp_path, tiny_decoder, shared_data):
    reference, held_out = tmp_path / "reference.csv", tmp_path / "held_out.csv"
    pd.read_csv(shared_data / "mp_20" / "train_partial" / "opryan90_train_named_subset.csv", nrows=40).to_csv(
        reference, index=False
    )
    pd.read_csv(shared_data / "mp_20" / "test.csv.gz", nrows=40).to_csv(held_out, index=False)
    out = tmp_path / "run"
    args = ["design", "--config", str(CONFIGS / "tiny" / "design.yaml"), "--decoder", str(tiny_decoder),
            "--out", str(out), "--reference", json.dumps([str(reference)]), "--cache_dir", str(tmp_path / "cache"),
            "--oracle.property_reference", json.dumps([str(held_out)]), "--screen.require_novel", "false",
            "--chemistry.max_atoms", "12", "--chemistry.elements", json.dumps(SYSTEM)]  # fmt: skip
    main(args)
    state = json.loads((out / "state.json").read_text())
    assert state["round"] == 2 and state["samples"] == 16 and state["stopped"].startswith("budget:")
    rows = [json.loads(line) for k in range(2) for line in (out / "rounds" / f"round_{k:04d}.jsonl").open()]
    assert len(rows) == 16 and all(r["decision"] for r in rows)
    assert all(r["condition_band_gap"] is not None for r in rows)  # CMA-ES conditions went to the decoder
    # restrict_elements (default): the decoder drew atom types from the chemical system only, so none fails it
    assert all({el.symbol for el in Composition(r["formula"]).elements} <= set(SYSTEM) for r in rows)
    assert not any(r["decision"].startswith("screen:chemistry") or "element" in r["decision"] for r in rows)
    assert sum(r["selected"] for r in rows) == state["oracle_calls"] <= 4
    assert json.loads((out / "config.json").read_text())["init_args"]["decoder"] == str(tiny_decoder)
    assert (out / "report.md").exists()
    main(args)  # a finished run resumes to the same place
    assert json.loads((out / "state.json").read_text())["round"] == 2
