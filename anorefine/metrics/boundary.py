"""Boundary F1: how well the contours of a binarised map match the GT contours, with a tolerance."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor


def inner_boundary(mask: Tensor) -> Tensor:
    """Pixels of (N,H,W) bool ``mask`` with a 4-neighbour outside it.

    Outside the image does not count: touching the image frame alone does not make a boundary.
    """
    interior = mask.clone()
    interior[:, 1:] &= mask[:, :-1]
    interior[:, :-1] &= mask[:, 1:]
    interior[:, :, 1:] &= mask[:, :, :-1]
    interior[:, :, :-1] &= mask[:, :, 1:]
    return mask & ~interior


def dilate(mask: Tensor, radius: float) -> Tensor:
    """Pixels within Euclidean distance ``radius`` of a set pixel of (N,H,W) ``mask``, per image."""
    out = mask.clone()
    reach = math.floor(radius)
    height, width = mask.shape[-2:]
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if (dy, dx) == (0, 0) or dy * dy + dx * dx > radius * radius:
                continue
            rows_out, rows_in = (
                slice(max(dy, 0), height + min(dy, 0)),
                slice(max(-dy, 0), height + min(-dy, 0)),
            )
            cols_out, cols_in = slice(max(dx, 0), width + min(dx, 0)), slice(max(-dx, 0), width + min(-dx, 0))
            out[:, rows_out, cols_out] |= mask[:, rows_in, cols_in]
    return out


def boundary_f1(
    anomaly_maps: Sequence[Tensor], gt_masks: Sequence[Tensor], threshold: float, tolerance: float = 2.0
) -> float | None:
    """Boundary F1 of ``anomaly_maps >= threshold`` against bool ``gt_masks``: parts, each (N,H,W).

    A predicted boundary pixel is correct if a GT boundary pixel lies within Euclidean distance
    ``tolerance`` in the same image, and vice versa for recall; counts are pooled over all images
    (boundaries predicted on normal images count as false positives). ``None`` if neither has a
    boundary, 0.0 if only one has.
    """
    num_predicted = num_truth = hits_predicted = hits_truth = 0
    for maps, masks in zip(anomaly_maps, gt_masks, strict=True):
        predicted = inner_boundary(maps >= threshold)
        truth = inner_boundary(masks)
        num_predicted += int(predicted.sum())
        num_truth += int(truth.sum())
        hits_predicted += int((predicted & dilate(truth, tolerance)).sum())
        hits_truth += int((truth & dilate(predicted, tolerance)).sum())
    if num_predicted == 0 or num_truth == 0:
        return None if num_predicted == num_truth else 0.0
    precision, recall = hits_predicted / num_predicted, hits_truth / num_truth
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0
