"""The contract every registered encoder keeps: shapes, masks, padding, finiteness, determinism, save/load.

Cases are keyed by config type and the registry is iterated, so a newly registered encoder without a tiny case
here fails `test_every_registered_encoder_has_a_case`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from encoders import (
    CHGNetConfig,
    CrystalGraphInput,
    CSPNetConfig,
    EncoderOutput,
    HFImageConfig,
    RadiusGraphConfig,
    SpectrumConfig,
    TextConfig,
    TimmImageConfig,
    ViTImageConfig,
    build_encoder,
    registered_encoders,
)


def random_crystals(sizes: list[int], seed: int = 0) -> CrystalGraphInput:
    """Crystals with random atoms in mildly sheared cells of 3.5-5.5 Å (every atom has neighbours < 6 Å)."""
    gen = torch.Generator().manual_seed(seed)
    crystals = []
    for n in sizes:
        lattice = torch.diag(3.5 + 2.0 * torch.rand(3, generator=gen)) + 0.5 * torch.rand(3, 3, generator=gen)
        numbers = torch.randint(1, 84, (n,), generator=gen)
        crystals.append((numbers, torch.rand(n, 3, generator=gen), lattice))
    return CrystalGraphInput.from_crystals(crystals)


@dataclass
class Case:
    """A tiny config plus how to make inputs for it.

    Attributes:
        config: Tiny config of the encoder.
        make_inputs: Builds keyword inputs of the forward pass (built lazily: text needs the encoder).
        random_init: Two builds differ before `load_state_dict` (False for pretrained backbones).
    """

    config: Any
    make_inputs: Callable[[Any], dict[str, Any]]
    random_init: bool = True


def _crystal_inputs(_encoder) -> dict[str, Any]:
    return {"crystals": random_crystals([4, 1, 6])}


def _spectrum_inputs(_encoder) -> dict[str, Any]:
    spectra = torch.rand(3, 2, 100)
    spectra[1] = 0.0  # an empty spectrum must not give NaN through the max-normalisation
    return {"spectra": spectra}


def _image_inputs(_encoder) -> dict[str, Any]:
    images = torch.rand(2, 1, 32, 32)
    images[1] = 0.0
    return {"images": images}


def _text_inputs(encoder) -> dict[str, Any]:
    return encoder.tokenize(["perovskite", "a layered van der Waals semiconductor with a 1.2 eV gap"])


CASES: dict[type, Case] = {
    CSPNetConfig: Case(CSPNetConfig(hidden_dim=16, num_layers=2, num_freqs=4, pool="attention"), _crystal_inputs),
    RadiusGraphConfig: Case(
        RadiusGraphConfig(hidden_dim=16, num_layers=2, cutoff=4.0, num_radial=8, radial_basis="bessel"),
        _crystal_inputs,
    ),
    CHGNetConfig: Case(CHGNetConfig(freeze=False), _crystal_inputs, random_init=False),
    SpectrumConfig: Case(
        SpectrumConfig(
            in_channels=2,
            num_bins=128,
            stem_channels=(8, 16),
            stem_strides=(2, 2),
            hidden_dim=16,
            num_layers=1,
            num_heads=2,
        ),
        _spectrum_inputs,
    ),
    ViTImageConfig: Case(
        ViTImageConfig(image_size=32, patch_size=8, hidden_dim=16, num_layers=1, num_heads=2), _image_inputs
    ),
    HFImageConfig: Case(
        HFImageConfig(arch="convnext", image_size=32, hidden_sizes=(8, 16), depths=(1, 1)), _image_inputs
    ),
    TimmImageConfig: Case(TimmImageConfig(model_name="resnet10t"), _image_inputs),
    TextConfig: Case(TextConfig(model_name="tiny-random", pooling="mean"), _text_inputs),
}


def _param(config_type: type):
    marks = []
    if config_type is TimmImageConfig and importlib.util.find_spec("timm") is None:
        marks.append(pytest.mark.skip(reason="timm is not installed (optional `vision` extra, needs torchvision)"))
    return pytest.param(config_type, marks=marks, id=config_type.__name__)


PARAMS = [_param(t) for t in registered_encoders()]


@pytest.fixture(scope="module", params=PARAMS)
def built(request):
    """(case, encoder, inputs), built once per module for each registered config type."""
    case = CASES[request.param]
    torch.manual_seed(0)
    encoder = build_encoder(case.config)
    return case, encoder, case.make_inputs(encoder)


def _run(encoder, inputs) -> EncoderOutput:
    encoder.eval()
    with torch.no_grad():
        return encoder(**inputs)


def test_every_registered_encoder_has_a_case():
    assert set(registered_encoders()) == set(CASES)


def test_build_encoder_returns_registered_class(built):
    case, encoder, _ = built
    assert type(encoder) is registered_encoders()[type(case.config)]
    assert encoder.config is case.config
    assert encoder.modality in {"crystal", "spectrum", "image", "text"}


def test_build_encoder_rejects_unknown_config():
    with pytest.raises(TypeError, match="no encoder registered for dict"):
        build_encoder({"hidden_dim": 8})


def test_output_shapes_and_mask(built):
    _, encoder, inputs = built
    out = _run(encoder, inputs)
    batch, length, dim = out.tokens.shape
    assert dim == encoder.output_dim
    assert out.mask.shape == (batch, length) and out.mask.dtype == torch.bool
    assert out.pooled.shape == (batch, dim)
    if encoder.modality == "crystal":
        assert out.mask.sum(dim=1).tolist() == inputs["crystals"].num_atoms.tolist()
        assert length == int(inputs["crystals"].num_atoms.max())
    elif encoder.modality == "text":
        assert torch.equal(out.mask, inputs["attention_mask"].bool())
    else:
        assert out.mask.all()
    assert (out.tokens[~out.mask] == 0).all()


def test_padding_does_not_change_outputs(built):
    """Padding content must not leak into valid tokens or `pooled`."""
    _, encoder, inputs = built
    out = _run(encoder, inputs)
    if encoder.modality == "crystal":
        # crystal 1 has one atom: alone it needs no padding; in the batch it is padded to 6 rows
        crystals = inputs["crystals"]
        alone = CrystalGraphInput(
            atomic_numbers=crystals.atomic_numbers[crystals.batch == 1],
            frac_coords=crystals.frac_coords[crystals.batch == 1],
            lattice=crystals.lattice[1:2],
            num_atoms=torch.tensor([1]),
            batch=torch.tensor([0]),
        )
        single = _run(encoder, {"crystals": alone})
        torch.testing.assert_close(single.pooled[0], out.pooled[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(single.tokens[0, :1], out.tokens[1, :1], rtol=1e-5, atol=1e-5)
    elif encoder.modality == "text":
        noisy = dict(inputs)
        pad = inputs["attention_mask"] == 0
        assert pad.any(), "the text case must contain padding"
        noisy["input_ids"] = inputs["input_ids"].masked_fill(pad, 1037)  # a real word piece, not [PAD]
        changed = _run(encoder, noisy)
        torch.testing.assert_close(changed.pooled, out.pooled)
        torch.testing.assert_close(changed.tokens, out.tokens)
    else:
        pytest.skip(f"{encoder.modality} inputs have a fixed size and no padding")


def test_finite_outputs_and_gradients(built):
    _, encoder, inputs = built
    encoder.train()
    out = encoder(**inputs)
    for tensor in (out.tokens, out.pooled):
        assert torch.isfinite(tensor).all()
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    assert trainable, "the tiny configs are all trainable"
    (out.tokens.square().mean() + out.pooled.square().mean()).backward()
    grads = [p.grad for p in trainable if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    encoder.zero_grad(set_to_none=True)


def test_eval_is_deterministic(built):
    _, encoder, inputs = built
    first, second = _run(encoder, inputs), _run(encoder, inputs)
    assert torch.equal(first.tokens, second.tokens)
    assert torch.equal(first.pooled, second.pooled)


def test_state_dict_round_trip(built):
    case, encoder, inputs = built
    torch.manual_seed(1234)
    fresh = build_encoder(case.config)
    if case.random_init:
        assert not torch.allclose(_run(fresh, inputs).pooled, _run(encoder, inputs).pooled)
    fresh.load_state_dict(encoder.state_dict())
    reloaded, original = _run(fresh, inputs), _run(encoder, inputs)
    assert torch.equal(reloaded.tokens, original.tokens)
    assert torch.equal(reloaded.pooled, original.pooled)
