"""Condition tokens for the diffusion decoder: several named conditions (text, properties, xrd, composition, ...)
concatenated along the token axis, with a validity mask and the condition each token belongs to.

Which condition a token comes from is kept so that classifier-free guidance can drop (training) or isolate
(sampling) each condition independently. A sample with no valid token is unconditional.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from encoders.layers.pooling import masked_mean

__all__ = ["Condition"]


@dataclass
class Condition:
    """Condition tokens of B samples.

    Attributes:
        tokens: `(B, T, D)` token features (already projected to a common width D).
        mask: `(B, T)` bool, True where a token is present. Rows of absent conditions are all False.
        groups: `(T,)` long, index into `names` of the condition each token belongs to.
        names: Condition names, e.g. ("text", "properties", "xrd", "composition").
        formula: `(B, T, 2)` long, (Z, whole count) of the tokens that stand for an element of a formula the input
            names (a caption's formula tokens), 0 at every other token; None when no token does. What a copy
            mechanism may copy (`CompositionModel` with `copy`); masked with the tokens.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    groups: torch.Tensor
    names: tuple[str, ...]
    formula: torch.Tensor | None = None

    def __post_init__(self) -> None:
        b, t, _ = self.tokens.shape
        if self.mask.shape != (b, t) or self.mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool {(b, t)}, got {self.mask.dtype} {tuple(self.mask.shape)}")
        if self.groups.shape != (t,):
            raise ValueError(f"groups must have shape {(t,)}, got {tuple(self.groups.shape)}")
        if self.formula is not None and self.formula.shape != (b, t, 2):
            raise ValueError(f"formula must have shape {(b, t, 2)}, got {tuple(self.formula.shape)}")
        self.names = tuple(self.names)

    @classmethod
    def from_parts(cls, parts: Mapping[str, tuple[torch.Tensor, ...]]) -> Condition:
        """Concatenate named `(tokens (B, T_c, D), mask (B, T_c))` pairs, in the mapping's order; a part may add
        its `formula (B, T_c, 2)` ids as a third entry (the others get zeros)."""
        if not parts:
            raise ValueError("at least one condition is needed (pass cond=None for an unconditional model)")
        names = tuple(parts)
        tokens = torch.cat([parts[n][0] for n in names], dim=1)
        mask = torch.cat([parts[n][1].bool() for n in names], dim=1)
        sizes = torch.tensor([parts[n][0].shape[1] for n in names])
        groups = torch.repeat_interleave(torch.arange(len(names)), sizes).to(tokens.device)
        formula = None
        if any(len(parts[n]) > 2 for n in names):
            formula = torch.cat([parts[n][2].long().to(tokens.device) if len(parts[n]) > 2
                                 else torch.zeros(*parts[n][1].shape, 2, dtype=torch.long, device=tokens.device)
                                 for n in names], dim=1)  # fmt: skip
        return cls(tokens=tokens, mask=mask, groups=groups, names=names, formula=formula)

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    def pooled(self) -> torch.Tensor:
        """Mean of the present tokens `(B, D)`; zeros for a sample with no condition."""
        return masked_mean(self.tokens, self.mask)

    def group_mask(self, name: str) -> torch.Tensor:
        """`(T,)` bool, True at the tokens of condition `name`."""
        return self.groups == self.names.index(name)

    def present(self) -> torch.Tensor:
        """`(B, C)` bool: whether sample b has at least one token of condition c."""
        per_group = [(self.mask & (self.groups == c)).any(dim=1) for c in range(len(self.names))]
        return torch.stack(per_group, dim=1)

    def with_mask(self, mask: torch.Tensor) -> Condition:
        """Same tokens with another `(B, T)` mask (ANDed with the current one, so nothing absent reappears)."""
        return Condition(tokens=self.tokens, mask=self.mask & mask, groups=self.groups, names=self.names,
                         formula=self.formula)  # fmt: skip

    def only(self, names: Sequence[str]) -> Condition:
        """Keep only the tokens of the named conditions (the others are masked out)."""
        keep = torch.zeros_like(self.groups, dtype=torch.bool)
        for name in names:
            keep |= self.group_mask(name)
        return self.with_mask(keep.unsqueeze(0).expand_as(self.mask))

    def empty(self) -> Condition:
        """Every token masked out: the unconditional input."""
        return self.with_mask(torch.zeros_like(self.mask))

    def select(self, index: torch.Tensor | slice) -> Condition:
        """Rows `index` of the batch."""
        formula = None if self.formula is None else self.formula[index]
        return Condition(tokens=self.tokens[index], mask=self.mask[index], groups=self.groups, names=self.names,
                         formula=formula)  # fmt: skip

    def expand(self, size: int) -> Condition:
        """A one-row condition repeated `size` times (views, no copy)."""
        if self.batch_size != 1:
            raise ValueError(f"expand needs a one-row condition, got {self.batch_size} rows")
        formula = None if self.formula is None else self.formula.expand(size, -1, -1)
        return Condition(self.tokens.expand(size, -1, -1), self.mask.expand(size, -1), self.groups, self.names,
                         formula)  # fmt: skip

    def to(self, device) -> Condition:
        """A copy on `device`."""
        formula = None if self.formula is None else self.formula.to(device)
        return Condition(self.tokens.to(device), self.mask.to(device), self.groups.to(device), self.names, formula)

    @staticmethod
    def cat(conditions: Sequence[Condition]) -> Condition:
        """Stack conditions with the same token layout along the batch axis."""
        first = conditions[0]
        formula = None
        if any(c.formula is not None for c in conditions):
            formula = torch.cat([c.formula if c.formula is not None
                                 else torch.zeros(*c.mask.shape, 2, dtype=torch.long, device=c.mask.device)
                                 for c in conditions])  # fmt: skip
        return Condition(
            tokens=torch.cat([c.tokens for c in conditions]),
            mask=torch.cat([c.mask for c in conditions]),
            groups=first.groups,
            names=first.names,
            formula=formula,
        )
