"""Cross-attention fusion: masks respected, no NaN with empty context, hard negatives never positives."""

from __future__ import annotations

import torch

from mmcrystal.fusion.cross_attention import CrossAttentionFusion, FusionConfig, mine_hard_negatives


def _fusion():
    torch.manual_seed(0)
    return CrossAttentionFusion(
        FusionConfig(dim=16, num_layers=2, num_heads=2), crystal_dim=8, context_dims={"text": 12}
    ).eval()


def test_padding_and_masked_context_do_not_leak():
    fusion = _fusion()
    crystal = torch.randn(2, 5, 8)
    crystal_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    text = torch.randn(2, 4, 12)
    text_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    out = fusion(crystal, crystal_mask, {"text": (text, text_mask)})
    crystal2, text2 = crystal.clone(), text.clone()
    crystal2[0, 3:] = 100.0  # padded atoms
    text2[0, 2:] = -100.0  # padded word pieces
    out2 = fusion(crystal2, crystal_mask, {"text": (text2, text_mask)})
    torch.testing.assert_close(out.pooled[0], out2.pooled[0])
    torch.testing.assert_close(out.match_logit, out2.match_logit)
    assert torch.all(out.tokens[0, 3:] == 0)


def test_all_masked_context_gives_finite_output():
    fusion = _fusion()
    out = fusion(torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.bool),
                 {"text": (torch.randn(3, 2, 12), torch.zeros(3, 2, dtype=torch.bool))})  # fmt: skip
    assert torch.isfinite(out.pooled).all() and torch.isfinite(out.match_logit).all()


def test_hard_negatives_exclude_positives():
    sims = torch.tensor([[0.9, 0.8, 0.1], [0.8, 0.9, 0.2], [0.1, 0.2, 0.9]])
    positives = torch.eye(3, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True  # rows 0 and 1 share a caption
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        neg = mine_hard_negatives(sims, positives, generator=g)
        assert neg[0] == 2 and neg[1] == 2 and neg[2] in (0, 1)
    assert mine_hard_negatives(sims, torch.ones(3, 3, dtype=torch.bool)).tolist() == [-1, -1, -1]
