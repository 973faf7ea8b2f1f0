"""Greedy k-center coreset for PatchCore's memory bank.

Own implementation because anomalib's KCenterGreedy allocates an N×d temporary per step and its
JL projection (eps=0.9) maps PatchCore features to more dimensions than they have: ~10× slower on CPU.
Same algorithm (random start, farthest point next), index for index (tested on unprojected features),
with far fewer passes over the rows: picks are made in batches inside a pool of the farthest rows.
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


def greedy_coreset_indices(
    features: torch.Tensor, size: int, start: int, pool_size: int = 2048
) -> torch.Tensor:
    """Indices of ``size`` rows chosen greedily, each the row farthest from those chosen before.

    Exact, but not one full pass over the rows per pick: after each full update of the distances
    (one matmul for all centers picked since the last), the ``pool_size`` farthest rows are kept
    with exact distances, and picks are made inside the pool while its farthest row is farther than
    every row outside it (whose distances can only have shrunk); then the next full update.
    """
    count = features.shape[0]
    if not 0 < size <= count:
        raise ValueError(f"coreset size must be in [1, {count}], got {size}")
    squared_norms = features.pow(2).sum(1)
    min_sq_dist = torch.full_like(squared_norms, float("inf"))
    chosen, pending = [start], [start]
    while True:
        centers = torch.tensor(pending, device=features.device)
        sq_dist = torch.addmm(squared_norms[centers][None], features, features[centers].T, alpha=-2)
        torch.minimum(
            min_sq_dist, sq_dist.add_(squared_norms[:, None]).amin(1).clamp_min_(0), out=min_sq_dist
        )
        min_sq_dist[centers] = 0
        if len(chosen) >= size:
            return torch.tensor(chosen, dtype=torch.long, device=features.device)
        pending = _picks_in_pool(features, squared_norms, min_sq_dist, size - len(chosen), pool_size)
        chosen += pending


def _picks_in_pool(
    features: torch.Tensor, squared_norms: torch.Tensor, min_sq_dist: torch.Tensor, most: int, pool_size: int
) -> list[int]:
    """The next greedy picks (at least one, at most ``most``) that are certain from the pool alone."""
    pool_size = min(pool_size, features.shape[0])
    top, pool = torch.topk(min_sq_dist, min(pool_size + 1, features.shape[0]))
    outside = float(top[pool_size]) if len(top) > pool_size else float("-inf")  # bounds every other row
    pool, pool_sq_dist = pool[:pool_size], top[:pool_size].clone()
    pool_features, pool_norms = features[pool], squared_norms[pool]
    picks: list[int] = []
    while len(picks) < most:
        best = int(torch.argmax(pool_sq_dist))
        if picks and not float(pool_sq_dist[best]) > outside:
            break
        picks.append(int(pool[best]))
        sq_dist = pool_norms - 2 * (pool_features @ pool_features[best]) + pool_norms[best]
        torch.minimum(pool_sq_dist, sq_dist.clamp_min_(0), out=pool_sq_dist)
        pool_sq_dist[best] = 0
    return picks


def sample_coreset(
    embedding: torch.Tensor, ratio: float, projection_dim: int = 128, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rows of ``embedding`` kept by a greedy coreset of ``ratio`` of them (at least one)."""
    size = max(1, int(embedding.shape[0] * ratio))
    projected = random_projection(embedding, projection_dim, generator)
    start = int(torch.randint(embedding.shape[0], (1,), generator=generator).item())
    return embedding[greedy_coreset_indices(projected, size, start)]
