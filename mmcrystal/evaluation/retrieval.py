"""Cross-modal retrieval and zero-shot classification metrics over embedding matrices.

Conventions: query i's correct gallery item is gallery i (the same material); with ``groups`` given, any gallery
item of the same group also counts as correct (duplicate captions are not wrong answers). Every function reports
the gallery size, because recall@k only compares across equal galleries (chance level of recall@k is k / gallery).
"""

from __future__ import annotations

import torch

__all__ = ["retrieval_ranks", "recall_at_k", "retrieval_metrics", "zero_shot_accuracy"]


@torch.no_grad()
def retrieval_ranks(
    queries: torch.Tensor, gallery: torch.Tensor, groups: torch.Tensor | None = None, chunk: int = 4096
) -> torch.Tensor:
    """0-based rank of the first correct gallery item for each query.

    Args:
        queries: (Q, D) L2-normalised.
        gallery: (Q, D) L2-normalised; row i is query i's match.
        groups: (Q,) long; items with the query's group id are correct too.
        chunk: Queries scored at once (bounds memory at chunk x Q similarities).

    Returns:
        (Q,) long ranks; 0 means the correct item came first.
    """
    n = queries.shape[0]
    ranks = torch.empty(n, dtype=torch.long)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sims = queries[start:stop] @ gallery.t()  # (c, Q)
        rows = torch.arange(start, stop, device=sims.device)
        if groups is None:
            correct = torch.zeros_like(sims, dtype=torch.bool)
            correct[torch.arange(stop - start), rows] = True
        else:
            g = groups.to(sims.device)
            correct = g[start:stop, None] == g[None, :]
        best_correct = sims.masked_fill(~correct, float("-inf")).max(dim=1).values  # (c,)
        ranks[start:stop] = (sims.masked_fill(correct, float("-inf")) > best_correct[:, None]).sum(1).cpu()
    return ranks


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    """Fraction of queries whose correct item is in the top k."""
    return float((ranks < k).float().mean()) if len(ranks) else float("nan")


def retrieval_metrics(
    queries: torch.Tensor, gallery: torch.Tensor, ks=(1, 5, 10), groups: torch.Tensor | None = None
) -> dict[str, float]:
    """recall@k for each k, mean and median rank (1-based), gallery size, and the chance level of recall@1."""
    ranks = retrieval_ranks(queries, gallery, groups)
    n = len(ranks)
    out = {f"recall@{k}": recall_at_k(ranks, k) for k in ks}
    out["mean_rank"] = float(ranks.float().mean() + 1) if n else float("nan")
    out["median_rank"] = float(ranks.float().median() + 1) if n else float("nan")
    out["gallery"] = float(n)
    out["chance_recall@1"] = 1.0 / n if n else float("nan")
    return out


@torch.no_grad()
def zero_shot_accuracy(embeddings: torch.Tensor, class_embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """CLIP-style zero-shot classification: argmax similarity to each class's (prompt-averaged) embedding.

    Args:
        embeddings: (N, D) L2-normalised.
        class_embeddings: (C, D) L2-normalised class prototypes.
        labels: (N,) long in [0, C); entries < 0 (unknown) are ignored.
    """
    known = labels >= 0
    if not bool(known.any()):
        return float("nan")
    predicted = (embeddings[known] @ class_embeddings.t()).argmax(dim=1)
    return float((predicted == labels[known].to(predicted.device)).float().mean())
