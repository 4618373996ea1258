"""Classifier-free guidance (Ho & Salimans 2021) with several conditions.

Training: `drop_conditions` removes each condition (all its tokens) independently per sample with its own
probability, so one network learns the unconditional model, every single-condition model and the joint one.

Sampling: with u the output given only the `always` conditions (nothing, usually; see below), `GuidanceConfig.mode`
picks
  - "joint":         out = u + w (full - u)                      (w = `scale`; w = 1 is the conditional model)
  - "per_condition": out = u + sum_c w_c (only_c - u)            (only_c: the output given condition c alone, plus
                                                                  the `always` ones)
"per_condition" is compositional CFG (Liu et al. 2022, "Compositional visual generation with composable diffusion
models", eq. 10), not the nested form u + w_1 (c_1 - u) + w_2 (c_1c_2 - c_1) (InstructPix2Pix): the compositional
sum needs exactly the models that independent per-condition dropout trains (u and each condition alone), every w_c
means the same thing whatever other conditions are given, and no order of the conditions has to be chosen. Both
cost one forward pass per guided condition plus one for u; the joint form costs two passes for any number.

`always` names conditions that were never dropped in training (drop probability 0, e.g. the composition of a
crystal-structure-prediction model): the network never learned an output without them, so they are kept in every
term, u included, and cannot be guided themselves. Scale 0 (all w_c = 0) is exactly the model given only the
`always` conditions; with `always` empty, the unconditional model.

The formula is applied to the normalised coordinate score and to the lattice eps/x_0 prediction (both linear in the
score), and to the log-softmax of the type logits (CFG for discrete diffusion guides log-probabilities; the result
is renormalised by the softmax of the sampler). Samples missing condition c get only_c = u, so their term vanishes;
a term that vanishes for every sample of the batch is not computed. All variants run as one stacked forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from mmcrystal.config import register_config
from mmcrystal.diffusion.condition import Condition
from mmcrystal.diffusion.state import DenoiserOutput, NoisyCrystal, repeat_crystals, split_outputs

__all__ = ["GuidanceConfig", "drop_conditions", "guided_denoise"]


@register_config
@dataclass
class GuidanceConfig:
    """Guidance at sampling time.

    Attributes:
        mode: "joint" (one scale for all conditions together) or "per_condition" (one scale per condition).
        scale: Joint guidance scale w: 0 unconditional, 1 conditional, > 1 stronger adherence.
        scales: Per-condition scales w_c by name (mode "per_condition"); unnamed conditions get 0 (left out).
        always: Conditions kept in every term, the baseline u included: those never dropped in training (drop
            probability 0), which the network cannot do without. They cannot have a scale.
    """

    mode: Literal["joint", "per_condition"] = "joint"
    scale: float = 1.0
    scales: dict[str, float] = field(default_factory=dict)
    always: list[str] = field(default_factory=list)


def drop_conditions(
    cond: Condition | None,
    p_per_condition: Mapping[str, float] | float,
    generator: torch.Generator | None = None,
) -> Condition | None:
    """Drop each condition of each sample independently (classifier-free guidance training).

    Args:
        cond: Condition tokens, or None (returned unchanged).
        p_per_condition: Drop probability per condition name (missing names: 0), or one probability for all.
        generator: Random source.

    Returns:
        The same tokens with the dropped conditions' tokens masked out.
    """
    if cond is None:
        return None
    if isinstance(p_per_condition, Mapping):
        unknown = set(p_per_condition) - set(cond.names)
        if unknown:
            raise ValueError(f"drop probabilities for unknown conditions {sorted(unknown)}; have {cond.names}")
        probs = [float(p_per_condition.get(name, 0.0)) for name in cond.names]
    else:
        probs = [float(p_per_condition)] * len(cond.names)
    p = torch.tensor(probs, device=cond.tokens.device)  # (C,)
    u = torch.rand(cond.batch_size, len(cond.names), generator=generator, device=cond.tokens.device)
    dropped = u < p  # (B, C)
    return cond.with_mask(~dropped[:, cond.groups])  # (B, T)


def _baseline(cond: Condition, config: GuidanceConfig) -> Condition:
    """The condition of the baseline term u: only the `always` conditions (none: the unconditional input)."""
    unknown = set(config.always) - set(cond.names)
    if unknown:
        raise ValueError(f"'always' names unknown conditions {sorted(unknown)}; have {cond.names}")
    return cond.only(list(config.always)) if config.always else cond.empty()


def _variants(cond: Condition, config: GuidanceConfig) -> list[tuple[float, Condition]]:
    """(weight, condition) for each term w (v - u) that can be non-zero (w != 0 and v differs from u somewhere)."""
    always = list(config.always)
    if config.mode == "joint":
        terms = [(float(config.scale), cond)]
    elif config.mode == "per_condition":
        unknown = set(config.scales) - set(cond.names)
        if unknown:
            raise ValueError(f"guidance scales for unknown conditions {sorted(unknown)}; have {cond.names}")
        guided_always = set(config.scales) & set(always)
        if guided_always:
            raise ValueError(f"{sorted(guided_always)} are never dropped ('always'), so they cannot be guided")
        terms = [(float(w), cond.only([*always, name])) for name, w in config.scales.items()]
    else:
        raise ValueError(f"unknown guidance mode {config.mode!r}")
    baseline_mask = _baseline(cond, config).mask
    return [(w, c) for w, c in terms if w != 0.0 and not torch.equal(c.mask, baseline_mask)]


def _combine(uncond: DenoiserOutput, outs: list[DenoiserOutput], weights: list[float]) -> DenoiserOutput:
    log_u = torch.log_softmax(uncond.types, dim=-1)
    coords, lattice, types = uncond.coords, uncond.lattice, log_u
    for w, out in zip(weights, outs, strict=True):
        coords = coords + w * (out.coords - uncond.coords)
        lattice = lattice + w * (out.lattice - uncond.lattice)
        types = types + w * (torch.log_softmax(out.types, dim=-1) - log_u)
    return DenoiserOutput(coords=coords, lattice=lattice, types=types)


def guided_denoise(
    denoiser: nn.Module,
    noisy: NoisyCrystal,
    t: torch.Tensor,
    cond: Condition | None,
    config: GuidanceConfig,
) -> DenoiserOutput:
    """The guided denoiser output (see the module docstring for the formula).

    Args:
        denoiser: Called as `denoiser(noisy, t, cond)` -> `DenoiserOutput`.
        noisy: `NoisyCrystal` of B crystals; t: `(B,)`.
        cond: Condition tokens of the B crystals, or None (then the plain unconditional output).
        config: `GuidanceConfig`.
    """
    if cond is None:
        return denoiser(noisy, t, None)
    terms = _variants(cond, config)
    baseline = _baseline(cond, config)
    if not terms:
        return denoiser(noisy, t, baseline)
    if len(terms) == 1 and terms[0][0] == 1.0:
        return denoiser(noisy, t, terms[0][1])  # u + 1 (v - u) = v, without the extra pass
    copies = 1 + len(terms)
    stacked = Condition.cat([baseline, *(c for _, c in terms)])
    out = denoiser(repeat_crystals(noisy, copies), t.repeat(copies), stacked)
    uncond, *conditioned = split_outputs(out, copies)
    return _combine(uncond, conditioned, [w for w, _ in terms])
