"""Condition encoder: formula tokens of the text condition (`ConditionConfig.text_formula_tokens`)."""

from __future__ import annotations

import torch

from encoders import TextConfig
from mmcrystal.diffusion.conditioning import ConditionConfig, ConditionEncoder, ConditionInputs
from mmcrystal.diffusion.guidance import drop_conditions
from mmcrystal.formulas import formula_counts


def _encoder(formula_tokens: bool) -> ConditionEncoder:
    torch.manual_seed(0)
    config = ConditionConfig(conditions=["text"], cond_dim=16, text=TextConfig(model_name="tiny-random"),
                             text_formula_tokens=formula_tokens)  # fmt: skip
    return ConditionEncoder(config).eval()


CAPTIONS = ["Orthorhombic LiFePO4 olivine.", "A cubic FCC metal.", "", "Tetragonal BaTiO3 in P4mm, a NiAs-type FeS"]


def _inputs() -> ConditionInputs:
    return ConditionInputs(batch_size=4, captions=list(CAPTIONS), caption_mask=torch.tensor([True, True, False, True]))


def test_caption_formula_counts():
    assert formula_counts("Orthorhombic LiFePO4 olivine.") == ((3, 1), (8, 4), (15, 1), (26, 1))
    assert formula_counts("A cubic FCC metal.") == ()  # an acronym, not a formula
    assert formula_counts("Tetragonal BaTiO3, a NiAs-type FeS") == ((8, 3), (22, 1), (56, 1))


def test_formula_tokens_follow_the_caption_and_share_the_text_group():
    plain, aware = _encoder(False)(_inputs()), _encoder(True)(_inputs())
    extra = aware.tokens.shape[1] - plain.tokens.shape[1]
    assert extra == 4  # the most elements in one caption's formula (LiFePO4)
    # formula tokens valid exactly where a present caption names a formula, one per element
    formula_mask = aware.mask[:, -extra:]
    assert formula_mask.sum(1).tolist() == [4, 0, 0, 3]
    # the text tokens themselves are unchanged by the option (same seed, same text encoder)
    torch.testing.assert_close(aware.tokens[:, : plain.tokens.shape[1]], plain.tokens)
    assert set(aware.groups[-extra:].tolist()) == {aware.names.index("text")}
    dropped = drop_conditions(aware, {"text": 1.0})
    assert not bool(dropped.mask.any())  # dropping the text drops its formula tokens too


def test_formula_tokens_encode_fractions():
    """Same elements in other proportions -> different tokens; the same reduced formula -> the same tokens."""
    encoder = _encoder(True)
    captions = ["SrTiO3 cubic", "Sr2Ti2O6 cubic", "Sr2TiO4 tetragonal"]
    cond = encoder(ConditionInputs(batch_size=3, captions=captions, caption_mask=torch.ones(3, dtype=torch.bool)))
    formula = cond.tokens[:, -3:]
    torch.testing.assert_close(formula[0], formula[1])
    assert not torch.allclose(formula[0], formula[2])
