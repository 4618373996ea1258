"""Condition encoder: formula tokens of the text condition (`ConditionConfig.text_formula_tokens`)."""

from __future__ import annotations

import pytest
import torch

from encoders import TextConfig
from mmcrystal.diffusion.conditioning import (
    ConditionConfig,
    ConditionEncoder,
    ConditionInputs,
    ScalarEmbedding,
    element_tokens,
)
from mmcrystal.diffusion.guidance import drop_conditions
from mmcrystal.formulas import formula_counts


def _encoder(formula_tokens: bool, counts: int = 0) -> ConditionEncoder:
    torch.manual_seed(0)
    config = ConditionConfig(conditions=["text"], cond_dim=16, text=TextConfig(model_name="tiny-random"),
                             text_formula_tokens=formula_tokens, text_formula_counts=counts)  # fmt: skip
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


def test_formula_count_tokens_tell_formula_units_apart():
    """With `text_formula_counts` the tokens also carry whole counts: SrTiO3 and Sr2Ti2O6 (same fractions) differ."""
    encoder = _encoder(True, counts=8)
    captions = ["SrTiO3 cubic", "Sr2Ti2O6 cubic", "SrTiO3 again"]
    cond = encoder(ConditionInputs(batch_size=3, captions=captions, caption_mask=torch.ones(3, dtype=torch.bool)))
    formula = cond.tokens[:, -3:]
    assert not torch.allclose(formula[0], formula[1])
    torch.testing.assert_close(formula[0], formula[2])


def test_element_tokens_add_clamped_count_embedding():
    torch.manual_seed(0)
    elements, fractions, count_table = torch.nn.Embedding(10, 4), ScalarEmbedding(4, 2), torch.nn.Embedding(4, 4)
    counts = torch.zeros(2, 10)
    counts[0, [3, 8]] = torch.tensor([1.0, 9.0])  # 9 atoms: beyond the table's last count (3) -> row 3
    counts[1, 5] = 2.0  # one element: its second token is padding (count 0)
    plain, mask = element_tokens(counts, elements, fractions)
    with_counts, mask_c = element_tokens(counts, elements, fractions, count_table)
    assert torch.equal(mask, mask_c) and mask.tolist() == [[True, True], [True, False]]
    expected = count_table(torch.tensor([[1, 3], [2, 0]]))
    torch.testing.assert_close(with_counts - plain, expected)


def test_formula_counts_need_formula_tokens():
    with pytest.raises(ValueError, match="text_formula_counts"):
        _encoder(False, counts=8)
    with pytest.raises(ValueError, match="text_formula_counts"):
        _encoder(True, counts=-1)


def test_formula_tokens_carry_what_they_stand_for():
    """`Condition.formula`: (Z, whole count) at each formula token, zeros at text tokens; it travels with the rows
    (select, expand, cat) and a dropped caption masks it with the tokens."""
    plain = _encoder(False)(_inputs())
    assert plain.formula is None  # no formula tokens, nothing to copy
    cond = _encoder(True)(_inputs())
    extra = cond.tokens.shape[1] - plain.tokens.shape[1]
    assert not bool(cond.formula[:, :-extra].any())
    assert cond.formula[0, -extra:].tolist() == [[3, 1], [8, 4], [15, 1], [26, 1]]  # LiFePO4, in order of Z
    assert cond.formula[3, -extra:].tolist() == [[8, 3], [22, 1], [56, 1], [0, 0]]
    assert not bool(cond.formula[1].any()) and not bool(cond.formula[2].any())
    one = cond.select(slice(3, 4))
    assert torch.equal(one.formula[0], cond.formula[3])
    assert torch.equal(one.expand(5).formula[4], cond.formula[3])
    both = type(cond).cat([one, one])
    assert both.formula.shape == (2, cond.tokens.shape[1], 2)
    dropped = drop_conditions(cond, {"text": 1.0})
    assert torch.equal(dropped.formula, cond.formula) and not bool(dropped.mask.any())


def test_text_cache_gives_the_uncached_condition_and_stays_bounded():
    plain = _encoder(True, counts=8)
    cached = _encoder(True, counts=8)
    cached.config.text_cache = 2  # room for two of the three present captions
    expected = plain(_inputs())
    for _ in range(2):  # first call fills the cache, the second reads it (and encodes the one that did not fit)
        got = cached(_inputs())
        assert torch.equal(got.mask, expected.mask)
        assert torch.allclose(got.tokens[got.mask], expected.tokens[expected.mask], atol=1e-5)
    assert len(cached._text_states) == 2
    # a batch of one caption is padded to its own length, yet matches its row of the full batch
    single = ConditionInputs(batch_size=1, captions=[CAPTIONS[1]], caption_mask=torch.tensor([True]))
    one = cached(single)
    assert torch.allclose(one.tokens[0][one.mask[0]], expected.tokens[1][expected.mask[1]], atol=1e-5)
