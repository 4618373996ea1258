"""The composition-first model p(reduced formula | condition): reduction, tokens, grammar, training, sampling."""

from __future__ import annotations

import pytest
import torch

from mmcrystal.diffusion.composition_model import CompositionModel, CompositionModelConfig, reduce_formulas
from mmcrystal.diffusion.condition import Condition
from mmcrystal.diffusion.conditioning import composition_counts

# Sr2Ti2O6 (a doubled perovskite cell), LiFePO4, NaCl x 2
NUMBERS = torch.tensor([38, 38, 22, 22, 8, 8, 8, 8, 8, 8, 3, 26, 15, 8, 8, 8, 8, 11, 17, 11, 17])
BATCH = torch.tensor([0] * 10 + [1] * 7 + [2] * 4)
FORMULAS = [{8: 3, 22: 1, 38: 1}, {3: 1, 8: 4, 15: 1, 26: 1}, {11: 1, 17: 1}]


def _reduced(numbers: torch.Tensor, batch: torch.Tensor, num_crystals: int, num_elements: int) -> torch.Tensor:
    """Reduced formulas `(B, num_elements)` of atoms with crystal indices (columns Z = 1..num_elements)."""
    return reduce_formulas(composition_counts(numbers, batch, num_crystals, num_elements)[:, 1:])


def _model(**overrides) -> CompositionModel:
    torch.manual_seed(0)
    config = CompositionModelConfig(enabled=True, cond_dim=8, hidden_dim=32, num_heads=2, max_atoms=24)
    for key, value in overrides.items():
        setattr(config, key, value)
    return CompositionModel(config)


def _cond(b: int = 3, present=None) -> Condition:
    torch.manual_seed(1)
    mask = torch.ones(b, 2, dtype=torch.bool) if present is None else present
    return Condition(torch.randn(b, 2, 8), mask, torch.zeros(2, dtype=torch.long), ("text",))


def _as_dict(row: torch.Tensor) -> dict[int, int]:
    return {int(z) + 1: int(c) for z, c in enumerate(row.tolist()) if c}


def test_reduce_formulas_divides_by_the_gcd():
    reduced = _reduced(NUMBERS, BATCH, 3, 100)
    assert [_as_dict(r) for r in reduced] == FORMULAS


def test_tokens_round_trip_and_vocabulary_limits():
    model = _model(max_count=3, max_elements=3)
    reduced = _reduced(NUMBERS, BATCH, 3, 100)
    tokens, fits = model.encode(reduced)
    assert fits.tolist() == [True, False, True]  # LiFePO4: 4 elements > max_elements 3
    assert model.decode(tokens[0, 1:].tolist()) == FORMULAS[0]
    assert model.decode(tokens[2, 1:].tolist()) == FORMULAS[2]
    too_many = _reduced(torch.tensor([8, 8, 8, 8, 14]), torch.zeros(5, dtype=torch.long), 1, 100)
    assert model.encode(too_many)[1].tolist() == [False]  # O4: count 4 > max_count 3
    loss, fits = model.loss(too_many, _cond(1))
    assert not fits.any() and float(loss.detach()) == 0.0  # nothing to learn from, and no NaN


def test_dropped_conditions_equal_no_condition():
    # the null memory token is always present: a sample with every condition token masked (CFG dropout) must be
    # exactly the unconditional model, which is what guidance subtracts
    model = _model().eval()
    tokens, _ = model.encode(_reduced(NUMBERS, BATCH, 3, 100))
    dropped = model(tokens, _cond(3).empty())
    torch.testing.assert_close(dropped, model(tokens, None))
    assert not torch.allclose(model(tokens, _cond(3)), dropped)


def test_untrained_samples_follow_the_grammar():
    model = _model(max_elements=4).eval()
    allowed = torch.zeros(100, dtype=torch.bool)
    allowed[[2, 7, 25]] = True  # Li, O, Fe (Z - 1)
    for cond, mask in ((_cond(1), None), (None, None), (_cond(1), allowed)):
        for formula in model.sample(cond, seeds=range(40), allowed_z=mask, max_atoms=10):
            assert formula and len(formula) <= 4 and sum(formula.values()) <= 10
            assert all(1 <= count <= model.config.max_count for count in formula.values())
            if mask is not None:
                assert set(formula) <= {3, 8, 26}


def test_each_formula_depends_only_on_its_seed():
    model = _model().eval()
    together = model.sample(_cond(1), seeds=[11, 12, 13])
    assert model.sample(_cond(1), seeds=[13]) == together[2:]
    assert model.sample(_cond(1), seeds=[11, 12, 13]) == together
    with pytest.raises(ValueError, match="temperature"):
        model.sample(_cond(1), seeds=[1], temperature=-1.0)


def test_learns_each_conditions_formula():
    # three conditions, one formula each: after fitting, sampling (greedy and at temperature 1, with and without
    # guidance) returns the formula of the condition it is given; an untrained model does not
    model = _model()
    cond = _cond(3)
    reduced = _reduced(NUMBERS, BATCH, 3, 100)
    before = [model.eval().sample(cond.select(slice(i, i + 1)), [0], temperature=0.0)[0] for i in range(3)]
    assert before != FORMULAS
    optimizer = torch.optim.Adam(model.train().parameters(), lr=3e-3)
    for _ in range(200):
        loss, _ = model.loss(reduced, cond)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.05
    model.eval()
    for i, formula in enumerate(FORMULAS):
        one = cond.select(slice(i, i + 1))
        assert model.sample(one, [0], temperature=0.0) == [formula]
        assert model.sample(one, range(5), temperature=1.0) == [formula] * 5
        assert model.sample(one, range(5), guidance=2.0) == [formula] * 5
    assert model.sample(cond, [0, 1, 2], temperature=0.0) == FORMULAS  # one condition row per seed, one loop
    with pytest.raises(ValueError, match="rows"):
        model.sample(cond, [0, 1])


def _caption_cond(formulas: list[dict[int, int]], present: bool = True) -> Condition:
    """Conditions whose only tokens stand for the elements of `formulas` (as a caption's formula tokens do), with
    uninformative features: what the model learns from them can only come through `Condition.formula`."""
    width = max(len(f) for f in formulas)
    ids = torch.zeros(len(formulas), width, 2, dtype=torch.long)
    mask = torch.zeros(len(formulas), width, dtype=torch.bool)
    for i, formula in enumerate(formulas):
        for j, (z, count) in enumerate(sorted(formula.items())):
            ids[i, j] = torch.tensor([z, count])
            mask[i, j] = present
    return Condition(torch.zeros(len(formulas), width, 8), mask, torch.zeros(width, dtype=torch.long), ("text",), ids)


def _random_formulas(n: int, seed: int, max_count: int) -> list[dict[int, int]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(1, 4, (1,), generator=g))
        zs = torch.randperm(40, generator=g)[:k] + 1
        counts = torch.randint(1, max_count + 1, (k,), generator=g)
        out.append({int(z): int(c) for z, c in zip(zs, counts, strict=True)})
    return out


def _fit(model: CompositionModel, steps: int = 300) -> CompositionModel:
    optimizer = torch.optim.Adam(model.train().parameters(), lr=3e-3)
    for step in range(steps):
        formulas = _random_formulas(64, step, max_count=3)
        counts = torch.zeros(64, 100, dtype=torch.long)
        for i, formula in enumerate(formulas):
            for z, c in formula.items():
                counts[i, z - 1] = c
        loss, _ = model.loss(reduce_formulas(counts), _caption_cond(formulas))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_copy_writes_counts_it_was_never_trained_to_emit():
    # trained on captions whose formulas have counts 1-3 (and are the targets), then asked for counts 7 and 11:
    # the pointer copies them; the plain model, whose count tokens 7 and 11 were never a target, cannot
    copying, plain = _fit(_model(copy=True)), _fit(_model(copy=False))
    unseen = [{5: 7, 17: 2}, {3: 11, 8: 1, 30: 3}, {12: 1, 20: 1}]
    cond = _caption_cond(unseen)
    assert copying.sample(cond, [0, 1, 2], temperature=0.0) == [{5: 7, 17: 2}, {3: 11, 8: 1, 30: 3}, {12: 1, 20: 1}]
    guessed = plain.sample(cond, [0, 1, 2], temperature=0.0)
    assert guessed[0] != unseen[0] and guessed[1] != unseen[1]
    # a dropped caption (classifier-free dropout) leaves nothing to copy: the output is the generator's alone
    dropped = _caption_cond(unseen, present=False)
    tokens = torch.tensor([[1, 3 + 4, 3 + 100 + 6]])
    without = Condition(dropped.tokens, dropped.mask, dropped.groups, dropped.names)
    torch.testing.assert_close(copying(tokens.expand(3, -1), dropped), copying(tokens.expand(3, -1), without))
    log_p = copying(tokens.expand(3, -1), cond)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(3, 3))  # a normalised distribution


def test_copy_only_rows_train_the_pointer_and_not_the_generator():
    model = _model(copy=True)
    formulas = [{5: 7, 17: 2}, {3: 1, 8: 2}]
    counts = torch.zeros(2, 100, dtype=torch.long)
    for i, formula in enumerate(formulas):
        for z, c in formula.items():
            counts[i, z - 1] = c
    cond = _caption_cond(formulas)

    def grads(copy_only):
        model.zero_grad()
        loss, _ = model.loss(reduce_formulas(counts), cond, copy_only)
        loss.backward()
        return model.output.weight.grad.abs().sum(), model.copy_gate.weight.grad.abs().sum()

    generator, gate = grads(torch.tensor([True, True]))
    assert generator == 0 and gate > 0
    generator, gate = grads(torch.tensor([True, False]))  # the other row still trains the generator
    assert generator > 0 and gate > 0
    generator, _ = grads(None)
    assert generator > 0
