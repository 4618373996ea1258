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

Copying (`copy`, a pointer-generator: See, Liu & Manning 2017). A caption that names its formula ("Y4In20Ni11")
asks the model to write tokens it may never have been trained to emit: MP-20 has few reduced formulas above 20
atoms, so count tokens like 19 or 20 get little probability however clearly the caption states them. With `copy`,
the condition's formula tokens (`Condition.formula`: the (Z, count) each stands for, masked with the condition, so
classifier-free dropout removes them too) become a second output distribution: the decoder state attends over them
(learned query and key projections), and the attention weights are placed on each token's element token (when the
next token is an element) or on its count token (when it is a count; the caption's counts divided by their gcd, as
the target is a reduced formula). A learned gate g(h) mixes p = (1 - g) softmax(logits) + g p_copy; the model
outputs log p. Nothing is copied by rule: where to point, and whether to copy at all (a caption whose formula is
not the structure's, or no formula), is trained with the same cross-entropy.
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
        copy: Mix in a learned copy distribution over the condition's formula tokens (module docstring).
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
    copy: bool = False


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
        if cfg.copy:
            self.copy_query = nn.Linear(d, d)
            self.copy_key = nn.Linear(d, d)
            self.copy_gate = nn.Linear(d, 1)
            self.copy_rank = nn.Embedding(cfg.max_elements + 1, d)  # k-th formula token (they come in order of Z)
            # learned weights of three pointer features (module docstring): entry is the element just written,
            # entry's element is still to come (above the last written in Z), entry is the next one to come
            self.copy_feature_weights = nn.Parameter(torch.zeros(3))

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

    def forward(
        self, tokens: torch.Tensor, cond: Condition | None, copy_only: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token logits `(B, L, vocab)` of token prefixes `(B, L)` given the condition (None: unconditional).
        `copy_only` `(B,)` bool (training, with `copy`): rows whose loss must not reach the generator's logits (only
        the pointer, the gate and the shared layers learn from them; rewritten captions, `formula_augmentation`)."""
        b, length = tokens.shape
        if length > self.max_len:
            raise ValueError(f"sequences of {length} tokens exceed max_len={self.max_len}")
        positions = torch.arange(length, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        memory, memory_mask = self._memory(cond, b, tokens.device)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=tokens.device), diagonal=1)
        h = self.layers(x, memory, tgt_mask=causal, tgt_key_padding_mask=tokens == PAD,
                        memory_key_padding_mask=memory_mask, tgt_is_causal=True)  # fmt: skip
        h = self.norm(h)
        logits = self.output(h)
        if not self.config.copy:
            return logits
        if copy_only is not None:
            logits = torch.where(copy_only.to(logits.device).view(-1, 1, 1), logits.detach(), logits)
        return self._copy(tokens, h, logits, cond)

    def _copy_sources(self, cond: Condition | None, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Element and count tokens `(B, S, 2)` of the condition's present formula tokens, and their mask `(B, S)`."""
        if cond is None or cond.formula is None:
            return torch.zeros(batch_size, 1, 2, dtype=torch.long, device=device), torch.zeros(
                batch_size, 1, dtype=torch.bool, device=device
            )
        cfg = self.config
        z, count = cond.formula.to(device).unbind(-1)  # (B, T)
        valid = cond.mask.to(device) & (z > 0) & (z <= cfg.num_elements) & (count > 0)
        # the caption's counts over their gcd: a reduced formula, like the targets
        reduced = reduce_formulas(count.masked_fill(~valid, 0)).clamp(1, cfg.max_count)
        ids = torch.stack([FIRST_ELEMENT + z.clamp(min=1) - 1, FIRST_ELEMENT + cfg.num_elements + reduced - 1], -1)
        return ids * valid.unsqueeze(-1), valid

    def _copy(self, tokens: torch.Tensor, h: torch.Tensor, logits: torch.Tensor, cond: Condition | None):
        """log((1 - g) softmax(logits) + g p_copy) `(B, L, vocab)` (module docstring)."""
        b, length = tokens.shape
        ids, valid = self._copy_sources(cond, b, tokens.device)  # (B, S, 2), (B, S)
        rank = (torch.cumsum(valid.long(), 1) - 1).clamp(0, self.config.max_elements)  # (B, S)
        keys = self.token_embedding(ids[..., 0]) + self.token_embedding(ids[..., 1]) + self.copy_rank(rank)
        keys = self.copy_key(keys)  # (B, S, d)
        scores = torch.einsum("bld,bsd->bls", self.copy_query(h), keys) / keys.shape[-1] ** 0.5
        first_count = FIRST_ELEMENT + self.config.num_elements
        next_is_count = (tokens >= FIRST_ELEMENT) & (tokens < first_count)  # (B, L) an element was just written
        # the last element written so far at each position (0 before the first): formulas go in order of Z
        last = torch.cummax(torch.where(next_is_count, tokens, torch.zeros_like(tokens)), dim=1).values
        element = ids[..., 0].unsqueeze(1)  # (B, 1, S)
        just_written = (element == tokens.unsqueeze(-1)) & next_is_count.unsqueeze(-1)
        to_come = (element > last.unsqueeze(-1)) & valid.unsqueeze(1)  # (B, L, S)
        upcoming = torch.where(to_come, element, torch.full_like(element, 1 << 30))
        next_one = to_come & (element == upcoming.min(-1, keepdim=True).values)
        features = torch.stack([just_written, to_come, next_one], -1).to(scores.dtype)  # (B, L, S, 3)
        scores = scores + features @ self.copy_feature_weights.to(scores.dtype)
        attention = torch.softmax(scores.masked_fill(~valid.unsqueeze(1), float("-inf")), -1)
        attention = torch.nan_to_num(attention, nan=0.0)  # rows without a source: nothing to copy
        target = torch.where(next_is_count.unsqueeze(-1), ids[..., 1].unsqueeze(1), ids[..., 0].unsqueeze(1))
        p_copy = torch.zeros_like(logits, dtype=torch.float32).scatter_add_(2, target, attention.float())
        has = valid.any(1).to(h.dtype).view(b, 1, 1)
        gate = torch.sigmoid(self.copy_gate(h)).float() * has  # (B, L, 1)
        p = (1 - gate) * torch.softmax(logits.float(), -1) + gate * p_copy
        return torch.log(p.clamp(min=1e-12)).to(logits.dtype)

    def loss(
        self, reduced: torch.Tensor, cond: Condition | None, copy_only: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean per-token cross-entropy (nats) of the reduced formulas `(B, num_elements)` given `cond`, and the
        `(B,)` bool of formulas that fit the vocabulary (the others are left out). `copy_only`: see `forward`."""
        tokens, fits = self.encode(reduced)
        logits = self(tokens[:, :-1], cond, copy_only)
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
        cond_n = cond if cond is None or cond.batch_size == n else cond.expand(n)
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
