"""Greedy k-center coreset for PatchCore's memory bank.

Own implementation because anomalib's KCenterGreedy allocates an N×d temporary per step and its
JL projection (eps=0.9) maps PatchCore features to more dimensions than they have: ~10× slower on CPU.
Same algorithm (random start, farthest point next); parity is tested on unprojected features.
"""

from __future__ import annotations

import torch


def random_projection(
    features: torch.Tensor, dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian random projection (N,d) -> (N,dim), as in the PatchCore paper; identity when dim >= d."""
    if dim <= 0 or dim >= features.shape[1]:
        return features
    matrix = torch.randn(features.shape[1], dim, generator=generator, device="cpu").to(features) / dim**0.5
    return features @ matrix


def greedy_coreset_indices(features: torch.Tensor, size: int, start: int) -> torch.Tensor:
    """Indices of ``size`` rows chosen greedily, each the row farthest from those chosen before."""
    if not 0 < size <= features.shape[0]:
        raise ValueError(f"coreset size must be in [1, {features.shape[0]}], got {size}")
    squared_norms = features.pow(2).sum(1)
    chosen = torch.empty(size, dtype=torch.long, device=features.device)
    chosen[0] = start
    min_sq_dist = torch.full_like(squared_norms, float("inf"))
    for step in range(1, size):
        center = features[chosen[step - 1]]
        sq_dist = squared_norms - 2 * (features @ center) + squared_norms[chosen[step - 1]]
        torch.minimum(min_sq_dist, sq_dist.clamp_min_(0), out=min_sq_dist)
        min_sq_dist[chosen[step - 1]] = 0
        chosen[step] = torch.argmax(min_sq_dist)
    return chosen


def sample_coreset(
    embedding: torch.Tensor, ratio: float, projection_dim: int = 128, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rows of ``embedding`` kept by a greedy coreset of ``ratio`` of them (at least one)."""
    size = max(1, int(embedding.shape[0] * ratio))
    projected = random_projection(embedding, projection_dim, generator)
    start = int(torch.randint(embedding.shape[0], (1,), generator=generator).item())
    return embedding[greedy_coreset_indices(projected, size, start)]
