"""scripts/probe_open_prompts.py: shares of drawn formulas that contain the named elements and pass SMACT."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pymatgen.core import Composition

from mmcrystal.evaluation.validity import smact_valid

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "probe_open_prompts.py"


def _load():
    spec = importlib.util.spec_from_file_location("probe_open_prompts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FakeGenerator:
    """Formulas by prompt, so the scores are known without a trained decoder."""

    DRAWS = {"a layered sulfide": ["ZnS", "NaCl", "MoS2", "Fe2O3"], "a phosphate": ["LiFePO4", "FeP", "Li3PO4", "O2"]}

    def __init__(self, composition=True):
        self.model = SimpleNamespace(composition=object() if composition else None)

    def sample_formulas(self, n, seed, prompt):
        return [Composition(f) for f in self.DRAWS[prompt]][:n]


def test_scores_named_elements_smact_and_distinct(monkeypatch, tmp_path):
    from mmcrystal.generate import CrystalGenerator

    module = _load()
    monkeypatch.setattr(CrystalGenerator, "from_pretrained", classmethod(lambda cls, folder: _FakeGenerator()))
    out = tmp_path / "probe.json"
    results = module.main(["--model", "m", "--n", "4", "--prompt", "a layered sulfide=S",
                           "--prompt", "a phosphate=P,O", "--out", str(out)])  # fmt: skip
    rows = results[0]["prompts"]
    assert rows["a layered sulfide"]["named"] == 0.5 and rows["a phosphate"]["named"] == 0.5
    for prompt, formulas in _FakeGenerator.DRAWS.items():
        assert rows[prompt]["smact"] == sum(smact_valid(Composition(f)) for f in formulas) / 4
        assert rows[prompt]["distinct"] == 4
    assert results[0]["mean"]["named"] == 0.5
    assert json.loads(out.read_text())[0]["prompts"]["a phosphate"]["elements"] == ["P", "O"]


def test_refuses_a_decoder_without_composition_model(monkeypatch):
    from mmcrystal.generate import CrystalGenerator

    module = _load()
    monkeypatch.setattr(CrystalGenerator, "from_pretrained", classmethod(lambda cls, f: _FakeGenerator(False)))
    with pytest.raises(SystemExit, match="no composition model"):
        module.main(["--model", "m", "--n", "2"])
    with pytest.raises(SystemExit, match="TEXT=El"):
        module.main(["--model", "m", "--prompt", "=S"])


def test_paraphrased_set_names_only_real_elements_in_its_words(monkeypatch):
    from pymatgen.core import Element

    from mmcrystal.formulas import formula_word

    module = _load()
    assert set(module.PARAPHRASED).isdisjoint(module.PROMPTS)
    for prompt, elements in module.PARAPHRASED.items():
        assert elements and all(Element.is_valid_symbol(e) for e in elements), prompt
        assert formula_word(prompt) is None, prompt  # open prompts: no formula to copy
    seen = []
    monkeypatch.setattr(module, "probe", lambda model, prompts, n, seed=0: seen.append(prompts) or
                        {"mean": {"named": 0, "smact": 0, "distinct": 0}, "prompts": {}, "model": model})  # fmt: skip
    module.main(["--model", "m", "--set", "paraphrased"])
    assert seen == [module.PARAPHRASED]
