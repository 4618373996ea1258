"""Composition first: a small autoregressive model of the reduced formula given the condition, p(formula | cond).

Why: the joint diffusion draws every atom's type from the denoiser's marginals, so a decoder that has the right
elements in roughly the right proportions still misses exact stoichiometry (LaCoO3 -> La7Co3O10): integer ratios are
a joint property of all types, which independent per-atom draws do not carry. This model writes the reduced
formula as a token sequence instead, element by element in order of Z, each followed by its count:

    BOS  Sr 1  Ti 1  O 3  EOS          (tokens: BOS, element Z, count, ..., EOS)

so a sampled formula is always a valid, whole-number composition, and different prompts, or one open prompt, give
different formulas (it is a distribution, not a mean fraction vector). The sampler then holds the drawn formula's
types fixed (at a cell size that is a whole number of formula units) while it denoises lattice and coordinates:
crystal structure prediction by infilling, as `prompt_formula="exact"` does with a parsed formula (CrystaLLM and
MatterGen's chemical-system conditioning likewise fix the composition before the structure).

Architecture: token + position embeddings, `num_layers` pre-norm transformer decoder layers that self-attend
causally and cross-attend to the condition tokens `(B, T, cond_dim)` plus one learned null token (so a sample with
every condition dropped, or no condition at all, attends to the null token alone and the model learns the marginal
formula distribution under the same classifier-free dropout as the denoiser). Trained with teacher-forced
cross-entropy next to the diffusion loss (`CrystalDiffusionModel.losses`); sampled with a grammar mask (element or
EOS after BOS or a count, a count after an element; elements strictly increasing in Z; the formula no larger than
`max_atoms`) and optional classifier-free guidance on the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmcrystal.config import register_config
from mmcrystal.diffusion.condition import Condition

__all__ = ["CompositionModel", "CompositionModelConfig", "reduce_formulas"]

PAD, BOS, EOS = 0, 1, 2
FIRST_ELEMENT = 3  # token of element Z is FIRST_ELEMENT + Z - 1


@register_config
@dataclass
class CompositionModelConfig:
    """Config of `CompositionModel` (the composition-first head; off unless `enabled`).

    Attributes:
        enabled: Train (and export) the composition model with the decoder.
        cond_dim: Width of the condition tokens (synchronised with the condition encoder).
        num_elements: Elements Z = 1..num_elements (synchronised with the atom-type classes).
        max_count: Largest count of one element in a reduced formula (larger ones are left out of the loss, counted).
        max_elements: Largest number of distinct elements in a formula.
        max_atoms: Largest reduced formula, in atoms (synchronised with the atom-count head).
        hidden_dim: Width of the transformer (the condition tokens are projected to it).
        num_layers: Transformer decoder layers.
        num_heads: Attention heads.
        dropout: Dropout inside the transformer layers.
    """

    enabled: bool = False
    cond_dim: int = 256
    num_elements: int = 100
    max_count: int = 24
    max_elements: int = 8
    max_atoms: int = 64
    hidden_dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.0


def reduce_formulas(counts: torch.Tensor) -> torch.Tensor:
    """Atom counts `(B, E)` per element (e.g. `conditioning.composition_counts` without its Z = 0 column) -> the
    reduced formulas: each row divided by the gcd of its entries, as long."""
    counts = counts.long()
    divisor = counts
    while divisor.shape[1] > 1:  # pairwise gcd folds, log2(E) ops (gcd(0, x) = x pads odd widths)
        if divisor.shape[1] % 2:
            divisor = torch.cat([divisor, divisor.new_zeros(divisor.shape[0], 1)], 1)
        divisor = torch.gcd(divisor[:, 0::2], divisor[:, 1::2])
    return counts // divisor.clamp(min=1)


class CompositionModel(nn.Module):
    """p(reduced formula | condition) as an autoregressive token model (module docstring).

    Args:
        config: `CompositionModelConfig`.
    """

    def __init__(self, config: CompositionModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CompositionModelConfig()
        self.vocab = FIRST_ELEMENT + cfg.num_elements + cfg.max_count
        self.max_len = 2 * cfg.max_elements + 2  # BOS, (element, count) x max_elements, EOS
        d = cfg.hidden_dim
        self.token_embedding = nn.Embedding(self.vocab, d)
        self.position_embedding = nn.Embedding(self.max_len, d)
        self.memory_projection = nn.Linear(cfg.cond_dim, d)
        self.null_memory = nn.Parameter(torch.zeros(1, 1, d))
        layer = nn.TransformerDecoderLayer(d, cfg.num_heads, 2 * d, cfg.dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, cfg.num_layers)
        self.norm = nn.LayerNorm(d)
        self.output = nn.Linear(d, self.vocab)

    # ------------------------------------------------------------------------------------------- tokens
    def count_token(self, count: int) -> int:
        return FIRST_ELEMENT + self.config.num_elements + int(count) - 1

    def encode(self, reduced: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token sequences `(B, L)` (PAD after EOS) of reduced counts `(B, num_elements)`, and a `(B,)` bool of the
        formulas that fit the vocabulary (at most max_elements elements, each count at most max_count)."""
        cfg = self.config
        present = reduced > 0
        per_row = present.sum(1)  # (B,) elements per formula
        fits = (per_row <= cfg.max_elements) & (reduced.max(1).values <= cfg.max_count)
        # one (element, count) pair per present element, in order of Z (nonzero() is row-major), as many as fit
        rows, z_minus_1 = present.nonzero(as_tuple=True)
        rank = torch.arange(len(rows), device=rows.device) - (torch.cumsum(per_row, 0) - per_row)[rows]
        keep = rank < cfg.max_elements
        rows, z_minus_1, rank = rows[keep], z_minus_1[keep], rank[keep]
        used = per_row.clamp(max=cfg.max_elements)
        width = 2 * int(used.max()) + 2 if len(reduced) else 2
        tokens = torch.full((len(reduced), width), PAD, dtype=torch.long, device=reduced.device)
        tokens[:, 0] = BOS
        tokens[rows, 1 + 2 * rank] = FIRST_ELEMENT + z_minus_1
        counts = reduced[rows, z_minus_1].clamp(max=cfg.max_count)
        tokens[rows, 2 + 2 * rank] = FIRST_ELEMENT + cfg.num_elements + counts - 1
        tokens[torch.arange(len(reduced), device=reduced.device), 1 + 2 * used] = EOS
        return tokens, fits

    def decode(self, tokens: Sequence[int]) -> dict[int, int]:
        """{Z: count} of one sampled sequence (BOS and EOS included or not)."""
        formula, first_count = {}, FIRST_ELEMENT + self.config.num_elements
        for element, count in zip(tokens[::2], tokens[1::2], strict=False):
            if FIRST_ELEMENT <= element < first_count and count >= first_count:
                formula[element - FIRST_ELEMENT + 1] = count - first_count + 1
        return formula

    # ------------------------------------------------------------------------------------------- network
    def _memory(self, cond: Condition | None, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        null = self.null_memory.expand(batch_size, 1, -1)
        always = torch.zeros(batch_size, 1, dtype=torch.bool, device=device)  # key_padding_mask: True = ignore
        if cond is None:
            return null, always
        memory = self.memory_projection(cond.tokens.to(null.dtype))
        return torch.cat([null, memory], 1), torch.cat([always, ~cond.mask.to(device)], 1)

    def forward(self, tokens: torch.Tensor, cond: Condition | None) -> torch.Tensor:
        """Next-token logits `(B, L, vocab)` of token prefixes `(B, L)` given the condition (None: unconditional)."""
        b, length = tokens.shape
        if length > self.max_len:
            raise ValueError(f"sequences of {length} tokens exceed max_len={self.max_len}")
        positions = torch.arange(length, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        memory, memory_mask = self._memory(cond, b, tokens.device)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=tokens.device), diagonal=1)
        h = self.layers(x, memory, tgt_mask=causal, tgt_key_padding_mask=tokens == PAD,
                        memory_key_padding_mask=memory_mask, tgt_is_causal=True)  # fmt: skip
        return self.output(self.norm(h))

    def loss(self, reduced: torch.Tensor, cond: Condition | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean per-token cross-entropy (nats) of the reduced formulas `(B, num_elements)` given `cond`, and the
        `(B,)` bool of formulas that fit the vocabulary (the others are left out)."""
        tokens, fits = self.encode(reduced)
        logits = self(tokens[:, :-1], cond)
        target = tokens[:, 1:].masked_fill(~fits.unsqueeze(1), PAD)
        if not bool(fits.any()):
            return logits.sum() * 0.0, fits
        return F.cross_entropy(logits.reshape(-1, self.vocab), target.reshape(-1), ignore_index=PAD), fits

    # ------------------------------------------------------------------------------------------- sampling
    def _grammar(self, prefix: list[int], allowed_z: torch.Tensor | None, max_atoms: int) -> torch.Tensor:
        """`(vocab,)` bool of the tokens that may follow `prefix` (module docstring)."""
        cfg = self.config
        ok = torch.zeros(self.vocab, dtype=torch.bool)
        first_count = FIRST_ELEMENT + cfg.num_elements
        last = prefix[-1]
        used = sum(t - first_count + 1 for t in prefix if t >= first_count)
        if FIRST_ELEMENT <= last < first_count:  # after an element: its count, keeping the formula <= max_atoms
            room = min(cfg.max_count, max_atoms - used)
            ok[first_count : first_count + max(room, 1)] = True
            return ok
        elements = [t for t in prefix if FIRST_ELEMENT <= t < first_count]
        if elements:
            ok[EOS] = True
        if len(elements) < cfg.max_elements and used < max_atoms:
            start = (elements[-1] + 1) if elements else FIRST_ELEMENT
            ok[start:first_count] = True
            if allowed_z is not None:
                ok[FIRST_ELEMENT:first_count] &= allowed_z[: cfg.num_elements].to(torch.bool).cpu()
        if not ok.any():
            ok[EOS] = True
        return ok

    @torch.no_grad()
    def sample(
        self,
        cond: Condition | None,
        seeds: Sequence[int],
        temperature: float = 1.0,
        guidance: float = 1.0,
        allowed_z: torch.Tensor | None = None,
        max_atoms: int | None = None,
    ) -> list[dict[int, int]]:
        """One reduced formula {Z: count} per seed, given `cond`: one request (`(1, T, D)` tokens) for all seeds, one
        row per seed, or None (unconditional).

        Each formula is drawn with its own `torch.Generator(seed)`, so it does not depend on the other samples.
        `guidance` s mixes the logits as u + s (c - u) (u: every condition dropped); 1 is plain conditional.
        `temperature` 0 takes the most likely token at every step. `allowed_z` `(num_elements,)` or one row per seed,
        bool, restricts the elements (a chemical system); `max_atoms` caps the formula's size.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        n = len(seeds)
        if n == 0:
            return []
        device = self.output.weight.device
        max_atoms = int(max_atoms or self.config.max_atoms)
        if cond is not None and cond.batch_size not in (1, n):
            raise ValueError(f"cond has {cond.batch_size} rows for {n} seeds (pass 1 or {n})")
        cond_n = None if cond is None else Condition(cond.tokens.expand(n, -1, -1), cond.mask.expand(n, -1),
                                                     cond.groups, cond.names)  # fmt: skip
        if allowed_z is not None:
            allowed_z = allowed_z.to(torch.bool).cpu().reshape(-1, allowed_z.shape[-1]).expand(n, -1)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        prefixes = [[BOS] for _ in range(n)]
        done = [False] * n
        for _ in range(self.max_len - 1):
            if all(done):
                break
            tokens = torch.tensor(prefixes, dtype=torch.long, device=device)
            logits = self(tokens, cond_n)[:, -1].float().cpu()  # (n, vocab)
            if guidance != 1.0 and cond_n is not None:
                uncond = self(tokens, None)[:, -1].float().cpu()
                logits = uncond + guidance * (logits - uncond)
            for i in range(n):
                if done[i]:
                    prefixes[i].append(PAD)
                    continue
                ok = self._grammar(prefixes[i], None if allowed_z is None else allowed_z[i], max_atoms)
                row = logits[i].masked_fill(~ok, float("-inf"))
                if temperature == 0:
                    token = int(row.argmax())
                else:
                    token = int(torch.multinomial(torch.softmax(row / temperature, -1), 1, generator=generators[i]))
                prefixes[i].append(token)
                done[i] = token == EOS
        return [self.decode([t for t in p[1:] if t not in (PAD, EOS)]) for p in prefixes]
