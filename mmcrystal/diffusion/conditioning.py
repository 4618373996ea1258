"""`ConditionEncoder`: the raw conditions of a batch (or of a user's prompt) -> `Condition` tokens of width cond_dim.

Each named condition is one classifier-free-guidance group (dropped as a whole by `drop_conditions`):
  - "text":        token states `(B, S, D_text)` of a FROZEN text encoder (the aligned model's, or a fresh MiniLM),
                   then a learned LayerNorm + linear projection to cond_dim; with `text_formula_tokens`, followed by
                   one token per element of the first chemical formula the caption names (as "composition");
  - "properties":  one token per configured scalar property, standardised with the training split's mean/std:
                   a sinusoidal embedding of the value plus a learned property-type embedding;
  - "xrd":         patch tokens of the aligned (frozen) XRD encoder, or of a fresh trainable one, projected;
  - "composition": one token per element: an element embedding plus an embedding of its atom fraction
                   (crystal structure prediction, or chemical-system-conditioned generation);
  - "spacegroup":  one token, an embedding of the international number (0 = unknown, masked).
A condition missing for a sample (no caption, property NaN or not measured, no XRD, space group 0) has all its
tokens masked for that sample; a sample with nothing present is unconditional.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from encoders import SpectrumConfig, TextConfig, build_encoder, xrd_config
from encoders.layers.mlp import MLP
from mmcrystal.config import register_config
from mmcrystal.diffusion.condition import Condition
from mmcrystal.formulas import formula_counts

__all__ = [
    "CONDITIONS",
    "ConditionConfig",
    "ConditionEncoder",
    "ConditionInputs",
    "ScalarEmbedding",
    "element_order",
    "element_tokens",
]

CONDITIONS = ("text", "properties", "xrd", "composition", "spacegroup")
NUM_SPACEGROUPS = 230


@register_config
@dataclass
class ConditionConfig:
    """Which conditions the decoder sees, and how each becomes tokens.

    Attributes:
        conditions: Condition names in token order, from "text", "properties", "xrd", "composition",
            "spacegroup"; an empty list trains an unconditional decoder.
        cond_dim: Width of every condition token; the task sets the denoiser's and atom-count head's cond_dim to it.
        aligned_model: Folder written by `AlignmentPretraining.save_pretrained`; its text and XRD encoders are used,
            frozen. None builds fresh encoders from `text` and `xrd`.
        text: Text encoder without an aligned model (default: the offline MiniLM-L6; "tiny-random" for tests);
            always frozen.
        xrd: XRD encoder when there is no aligned one (default: a 2-layer, width-128 `xrd_config(1024)`); trained,
            since it starts from random weights.
        properties: Scalar property names as in the manifest (e.g. band_gap, formation_energy_per_atom,
            e_above_hull), one token each, standardised with the manifest's training-split mean and std.
        num_elements: Largest atomic number of the composition embedding.
        num_freqs: Frequencies of the sinusoidal embedding of scalars (property values, element fractions).
        text_formula_tokens: Append to the text tokens one token per element of the first chemical formula the
            caption names (`mmcrystal.formulas`; element embedding + atom fraction, like "composition"), in the
            same guidance group as the text. Why: general-purpose word-piece tokenisers cut formulas into
            arbitrary pieces (MiniLM lower-cases LiFePO4 and splits it into li ##fe ##po ##4), which leaves the
            decoder to learn stoichiometry from sub-word statistics. The caption is still the only input.
        text_formula_counts: With `text_formula_tokens`, also add to each formula token an embedding of the
            element's whole count as the caption writes it (1..text_formula_counts; larger counts share the last
            embedding); 0 leaves it out. Why: the atom fraction alone does not say the integer count (4/35 of
            Tb4Ga21Ni10), so a composition model conditioned on fractions cannot copy a formula unit it never saw;
            with the count it can (BENCHMARKS.md, "MP-40-sized formulas").
        drop_prob: Classifier-free-guidance drop probability per condition name during training.
        default_drop_prob: Drop probability of the conditions not named in `drop_prob`.
        text_cache: Keep the frozen text encoder's token states of up to this many distinct captions in memory
            (on the model's device, float32, about 40 kB per caption at MiniLM's width) and reuse them; 0 runs the
            encoder every time. Why: the frozen encoder is most of a CPU training step and the captions repeat every
            epoch (MP-20 rows have 5 generated captions each). Outputs match an uncached run to float rounding.
    """

    conditions: list[str] = field(default_factory=lambda: ["text"])
    cond_dim: int = 256
    aligned_model: str | None = None
    text: TextConfig | None = None
    xrd: SpectrumConfig | None = None
    properties: list[str] = field(default_factory=list)
    num_elements: int = 100
    num_freqs: int = 16
    text_formula_tokens: bool = False
    text_formula_counts: int = 0
    drop_prob: dict[str, float] = field(default_factory=dict)
    default_drop_prob: float = 0.1
    text_cache: int = 0

    def drop_probs(self) -> dict[str, float]:
        """Drop probability of each configured condition."""
        return {name: float(self.drop_prob.get(name, self.default_drop_prob)) for name in self.conditions}


@dataclass
class ConditionInputs:
    """Raw condition values of B samples: from a `MultimodalBatch` (`from_batch`) or built from a user's prompt.

    Attributes:
        batch_size: B.
        captions: B strings ("" where absent), or None.
        caption_mask: `(B,)` bool.
        properties: `(B, P)` raw values in manifest units (eV, eV/atom, ...) of the configured properties, or None.
        property_mask: `(B, P)` bool.
        xrd: `(B, L)` intensities on the 2θ grid of the XRD encoder, or None.
        xrd_mask: `(B,)` bool.
        composition: `(B, num_elements + 1)` atom count of each atomic number Z (column Z), or None.
        spacegroup: `(B,)` long international number, 0 where unknown, or None.
        caption_transient: `(B,)` bool, captions never to keep in the text cache (`ConditionConfig.text_cache`):
            rewritten or described training captions (`mmcrystal.diffusion.formula_augmentation`,
            `formula_words`), or None.
    """

    batch_size: int
    captions: list[str] | None = None
    caption_mask: torch.Tensor | None = None
    properties: torch.Tensor | None = None
    property_mask: torch.Tensor | None = None
    xrd: torch.Tensor | None = None
    xrd_mask: torch.Tensor | None = None
    composition: torch.Tensor | None = None
    spacegroup: torch.Tensor | None = None
    caption_transient: torch.Tensor | None = None

    @classmethod
    def from_batch(cls, batch, property_names: Sequence[str] = (), num_elements: int = 100) -> ConditionInputs:
        """Every condition a `MultimodalBatch` holds; properties in the order of `property_names`."""
        crystal = batch.crystal
        b, device = len(batch), crystal.lattice.device
        props = torch.zeros(b, len(property_names), device=device)
        prop_mask = torch.zeros(b, len(property_names), dtype=torch.bool, device=device)
        for j, name in enumerate(property_names):
            if name in batch.property_names:
                col = batch.property_names.index(name)
                props[:, j] = batch.properties[:, col].to(device)
                prop_mask[:, j] = batch.property_mask[:, col].to(device)
        return cls(
            batch_size=b,
            captions=list(batch.captions),
            caption_mask=batch.caption_mask.to(device),
            properties=props,
            property_mask=prop_mask & torch.isfinite(props),
            xrd=batch.xrd,
            xrd_mask=batch.xrd_mask.to(device),
            composition=composition_counts(crystal.atomic_numbers, crystal.batch, b, num_elements),
            spacegroup=batch.spacegroup.to(device),
        )


def composition_counts(atomic_numbers: torch.Tensor, batch: torch.Tensor, num_crystals: int, num_elements: int):
    """Atoms `(N,)` with crystal index `(N,)` -> counts `(B, num_elements + 1)` per atomic number (column Z)."""
    if atomic_numbers.numel() and int(atomic_numbers.max()) > num_elements:
        raise ValueError(f"atomic number {int(atomic_numbers.max())} above num_elements={num_elements}")
    counts = torch.zeros(num_crystals, num_elements + 1, device=atomic_numbers.device)
    ones = torch.ones_like(atomic_numbers, dtype=counts.dtype)
    return counts.index_put_((batch, atomic_numbers.long()), ones, accumulate=True)


class ScalarEmbedding(nn.Module):
    """A real scalar -> `(dim,)`: [x, sin(w_k x), cos(w_k x)] at geometric frequencies w_k, then an MLP.

    Random/geometric Fourier features make an MLP resolve fine differences of a scalar (Tancik et al. 2020; the
    sinusoidal encoding of Vaswani et al. 2017). The frequencies span 0.5 to 50 rad per unit, for standardised
    values (|x| of a few) and fractions in [0, 1].

    Args:
        dim: Output width.
        num_freqs: Number of frequencies K.
    """

    def __init__(self, dim: int, num_freqs: int) -> None:
        super().__init__()
        freqs = torch.exp(torch.linspace(math.log(0.5), math.log(50.0), num_freqs))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = MLP(2 * num_freqs + 1, dim, dim, num_layers=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (...,) -> (..., dim)
        angles = x.unsqueeze(-1) * self.freqs  # (..., K)
        return self.mlp(torch.cat([x.unsqueeze(-1), torch.sin(angles), torch.cos(angles)], dim=-1))


def element_order(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Atom counts `(B, Z + 1)` -> the present elements `(B, E)` long (Z, in increasing order, padded), their mask
    `(B, E)` and counts `(B, E)` float: the token order of `element_tokens`."""
    counts = counts.float()
    present = counts > 0  # (B, Z + 1)
    width = max(int(present.sum(1).max()), 1) if counts.shape[0] else 1
    order = torch.argsort(present.to(torch.int8), dim=1, descending=True, stable=True)[:, :width]  # (B, E)
    return order, torch.gather(present, 1, order), torch.gather(counts, 1, order)


def element_tokens(
    counts: torch.Tensor,
    element_embedding: nn.Embedding,
    fraction_embedding: ScalarEmbedding,
    count_embedding: nn.Embedding | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Atom counts `(B, Z + 1)` (column Z) -> one token per present element `(B, E, dim)` and mask `(B, E)`:
    element embedding + embedding of its atom fraction (+ `count_embedding` of its whole count, clamped to the
    table's last row); present elements first in order of Z, padded to the largest number of elements E in the batch
    (at least 1 token, masked where a row has no element)."""
    order, mask, chosen = element_order(counts)
    tokens = element_embedding(order) + fraction_embedding(chosen / counts.sum(1, keepdim=True).clamp(min=1.0))
    if count_embedding is not None:
        whole = chosen.round().long().clamp(0, count_embedding.num_embeddings - 1)  # 0 only on padding tokens
        tokens = tokens + count_embedding(whole)
    return tokens, mask


def _load_aligned_encoders(folder: str) -> dict[str, nn.Module]:
    """The encoders of an aligned `MultimodalCrystalModel` folder (no lightning, no network)."""
    from mmcrystal.model import MultimodalCrystalModel
    from mmcrystal.pretrained import load_pretrained

    model, _ = load_pretrained(folder, MultimodalCrystalModel)
    return dict(model.encoders.items())


def _frozen(module: nn.Module) -> nn.Module:
    return module.requires_grad_(False).eval()


class ConditionEncoder(nn.Module):
    """Condition tokens `(B, T, cond_dim)` of a batch, grouped by condition name (see the module docstring).

    Args:
        config: `ConditionConfig`.
        property_stats: `{name: {"mean": m, "std": s}}` of the configured properties (the manifest's
            `normalization.properties`); needed before encoding properties (`set_property_stats`).
    """

    def __init__(self, config: ConditionConfig | None = None, property_stats: Mapping | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ConditionConfig()
        unknown = set(cfg.conditions) - set(CONDITIONS)
        if unknown or len(set(cfg.conditions)) != len(cfg.conditions):
            raise ValueError(f"conditions must be distinct names from {CONDITIONS}; got {cfg.conditions}")
        names, dim = cfg.conditions, cfg.cond_dim
        if cfg.text_formula_counts < 0 or (cfg.text_formula_counts and not cfg.text_formula_tokens):
            raise ValueError(f"text_formula_counts must be >= 0 and needs text_formula_tokens: true; got "
                             f"{cfg.text_formula_counts} with text_formula_tokens={cfg.text_formula_tokens}")  # fmt: skip
        aligned = _load_aligned_encoders(cfg.aligned_model) if cfg.aligned_model else {}
        self.frozen_names: list[str] = []
        if "text" in names:
            self.text_encoder = _frozen(aligned.get("text") or build_encoder(cfg.text or TextConfig(freeze=True)))
            self.frozen_names.append("text_encoder")
            self.text_proj = nn.Sequential(
                nn.LayerNorm(self.text_encoder.output_dim), nn.Linear(self.text_encoder.output_dim, dim)
            )
            if cfg.text_formula_tokens:
                self.formula_element_embedding = nn.Embedding(cfg.num_elements + 1, dim)
                self.formula_fraction_embedding = ScalarEmbedding(dim, cfg.num_freqs)
                if cfg.text_formula_counts > 0:
                    self.formula_count_embedding = nn.Embedding(cfg.text_formula_counts + 1, dim)
        if "xrd" in names:
            if "xrd" in aligned:
                self.xrd_encoder = _frozen(aligned["xrd"])
                self.frozen_names.append("xrd_encoder")
            else:
                self.xrd_encoder = build_encoder(cfg.xrd or xrd_config(1024, hidden_dim=128, num_layers=2))
            width = self.xrd_encoder.output_dim
            self.xrd_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))
        if "properties" in names:
            if not cfg.properties:
                raise ValueError("condition 'properties' needs ConditionConfig.properties (names of the manifest)")
            self.property_value = ScalarEmbedding(dim, cfg.num_freqs)
            self.property_type = nn.Embedding(len(cfg.properties), dim)
        self.register_buffer("property_mean", torch.zeros(len(cfg.properties)), persistent=False)
        self.register_buffer("property_std", torch.ones(len(cfg.properties)), persistent=False)
        self.has_property_stats = False
        if property_stats is not None:
            self.set_property_stats(property_stats)
        if "composition" in names:
            self.element_embedding = nn.Embedding(cfg.num_elements + 1, dim)
            self.fraction_embedding = ScalarEmbedding(dim, cfg.num_freqs)
        if "spacegroup" in names:
            self.spacegroup_embedding = nn.Embedding(NUM_SPACEGROUPS + 1, dim)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.config.conditions)

    def set_property_stats(self, stats: Mapping) -> None:
        """Standardisation of the configured properties from `{name: {"mean": m, "std": s}}`."""
        missing = [p for p in self.config.properties if p not in stats]
        if missing:
            raise ValueError(f"no statistics for properties {missing}; the data has {sorted(stats)}")
        for j, name in enumerate(self.config.properties):
            self.property_mean[j] = float(stats[name]["mean"])
            self.property_std[j] = max(float(stats[name].get("std", 1.0)), 1e-6)
        self.has_property_stats = True

    def export_config(self) -> ConditionConfig:
        """The config that rebuilds this module without the aligned-model folder (encoder configs inlined)."""
        text = self.text_encoder.config if "text" in self.names else self.config.text
        xrd = self.xrd_encoder.config if "xrd" in self.names else self.config.xrd
        return replace(self.config, aligned_model=None, text=text, xrd=xrd)

    def train(self, mode: bool = True) -> ConditionEncoder:
        super().train(mode)
        for name in self.frozen_names:  # frozen encoders never run dropout
            getattr(self, name).eval()
        return self

    def _device(self) -> torch.device:
        return self.property_mean.device

    # ------------------------------------------------------------------------------------------- conditions
    def _text(self, inputs: ConditionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = self._text_tokens(inputs)
        if not self.config.text_formula_tokens:
            return tokens, mask
        counts = self._caption_formulas(inputs, mask.any(dim=1))  # (B, Z + 1)
        formula, formula_mask = element_tokens(counts, self.formula_element_embedding, self.formula_fraction_embedding,
                                               getattr(self, "formula_count_embedding", None))  # fmt: skip
        order, _, whole = element_order(counts)  # what each formula token stands for, for copy mechanisms
        ids = torch.stack([order, whole.round().long()], dim=-1) * formula_mask.unsqueeze(-1)  # (B, E, 2)
        ids = torch.cat([torch.zeros(*mask.shape, 2, dtype=torch.long, device=ids.device), ids], dim=1)
        return (torch.cat([tokens, formula.to(tokens.dtype)], dim=1), torch.cat([mask, formula_mask], dim=1), ids)

    def _caption_formulas(self, inputs: ConditionInputs, present: torch.Tensor) -> torch.Tensor:
        """Atom counts `(B, Z + 1)` of the first formula each present caption names (zeros where none)."""
        counts = torch.zeros(inputs.batch_size, self.config.num_elements + 1)
        for i in present.nonzero()[:, 0].tolist():
            for z, n in formula_counts(inputs.captions[i], self.config.num_elements):
                counts[i, z] = n
        return counts.to(self._device())

    def _text_tokens(self, inputs: ConditionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        b, device = inputs.batch_size, self._device()
        present = inputs.caption_mask if inputs.captions is not None else torch.zeros(b, dtype=torch.bool)
        present = present.to(device)
        if not bool(present.any()):  # run the projection on zeros so every parameter has a gradient (DDP)
            width = self.text_encoder.output_dim
            return self.text_proj(torch.zeros(b, 1, width, device=device)), torch.zeros(b, 1, dtype=torch.bool)
        rows = present.nonzero()[:, 0].tolist()
        selected = [inputs.captions[i] for i in rows]
        transient = inputs.caption_transient
        keep = [True] * len(rows) if transient is None else [not bool(transient[i]) for i in rows]
        states, state_mask = self._encode_captions(selected, device, keep)  # (P, S, D_text), (P, S)
        projected = self.text_proj(states)  # (P, S, cond_dim)
        tokens = projected.new_zeros(b, *projected.shape[1:]).index_put((present.nonzero()[:, 0],), projected)
        mask = torch.zeros(b, projected.shape[1], dtype=torch.bool, device=device)
        mask[present] = state_mask
        return tokens, mask

    @torch.no_grad()
    def _encode_captions(self, captions: list[str], device, keep: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen token states `(P, S, D_text)` (float32) and mask `(P, S)` of P captions, through the cache
        (`ConditionConfig.text_cache`) when it is on: each caption keeps its unpadded states (where `keep`)."""
        limit = int(getattr(self.config, "text_cache", 0) or 0)
        if limit <= 0:
            ids = self.text_encoder.tokenize(captions)
            out = self.text_encoder(ids["input_ids"].to(device), ids["attention_mask"].to(device))
            return out.tokens.float(), out.mask.to(device)
        cache = self.__dict__.setdefault("_text_states", {})  # not a buffer: never saved, never moved
        missing = list(dict.fromkeys(c for c in captions if c not in cache))
        storable = {c for c, k in zip(captions, keep, strict=True) if k}
        fresh = {}
        if missing:
            ids = self.text_encoder.tokenize(missing)
            out = self.text_encoder(ids["input_ids"].to(device), ids["attention_mask"].to(device))
            for caption, states, real in zip(missing, out.tokens.float(), out.mask, strict=True):
                fresh[caption] = states[real.to(states.device)].clone()  # (S_i, D_text)
                if len(cache) < limit and caption in storable:
                    cache[caption] = fresh[caption]
        rows = [fresh.get(c, cache.get(c)).to(device) for c in captions]
        lengths = torch.tensor([len(r) for r in rows], device=device)
        states = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (P, S, D_text)
        return states, torch.arange(states.shape[1], device=device) < lengths.unsqueeze(1)

    def _xrd(self, inputs: ConditionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        b, device = inputs.batch_size, self._device()
        present = inputs.xrd_mask.to(device) if inputs.xrd is not None else torch.zeros(b, dtype=torch.bool)
        present = present.to(device)
        if not bool(present.any()):  # zero pattern through the encoder: every parameter is used (DDP)
            out = self.xrd_encoder(torch.zeros(1, self.xrd_encoder.config.num_bins, device=device))
            tokens = self.xrd_proj(out.tokens.float()).expand(b, -1, -1)
            return tokens, torch.zeros(b, tokens.shape[1], dtype=torch.bool, device=device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and "xrd_encoder" not in self.frozen_names):
            out = self.xrd_encoder(inputs.xrd.to(device)[present])
        projected = self.xrd_proj(out.tokens.float())  # (P, S, cond_dim)
        tokens = projected.new_zeros(b, *projected.shape[1:]).index_put((present.nonzero()[:, 0],), projected)
        mask = torch.zeros(b, projected.shape[1], dtype=torch.bool, device=device)
        mask[present] = out.mask
        return tokens, mask

    def _properties(self, inputs: ConditionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_property_stats:
            raise RuntimeError("property statistics are unset: pass property_stats or call set_property_stats")
        b, p, device = inputs.batch_size, len(self.config.properties), self._device()
        values = inputs.properties if inputs.properties is not None else torch.zeros(b, p)
        mask = inputs.property_mask if inputs.property_mask is not None else torch.zeros(b, p, dtype=torch.bool)
        values, mask = values.to(device).float(), mask.to(device) & torch.isfinite(values.to(device))
        z = torch.where(mask, (values - self.property_mean) / self.property_std, torch.zeros_like(values))  # (B, P)
        tokens = self.property_value(z) + self.property_type.weight  # (B, P, cond_dim)
        return tokens, mask

    def _composition(self, inputs: ConditionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        b, device = inputs.batch_size, self._device()
        counts = inputs.composition
        if counts is None:
            counts = torch.zeros(b, self.config.num_elements + 1, device=device)
        return element_tokens(counts.to(device).float(), self.element_embedding, self.fraction_embedding)

    def _spacegroup(self, inputs: ConditionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        b, device = inputs.batch_size, self._device()
        numbers = inputs.spacegroup if inputs.spacegroup is not None else torch.zeros(b, dtype=torch.long)
        numbers = numbers.to(device).long().clamp(0, NUM_SPACEGROUPS)
        return self.spacegroup_embedding(numbers).unsqueeze(1), (numbers > 0).unsqueeze(1)

    def forward(self, inputs: ConditionInputs) -> Condition | None:
        """Tokens of every configured condition, in config order; None for an unconditional decoder."""
        if not self.names:
            return None
        encode = {
            "text": self._text,
            "properties": self._properties,
            "xrd": self._xrd,
            "composition": self._composition,
            "spacegroup": self._spacegroup,
        }
        device = self._device()
        parts = {}
        for name in self.names:
            tokens, mask, *ids = encode[name](inputs)  # text with formula tokens adds their (Z, count) ids
            parts[name] = (tokens.to(device), mask.to(device), *[i.to(device) for i in ids])
        return Condition.from_parts(parts)
