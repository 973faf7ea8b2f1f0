"""Metrics broken down by defect kind and by defect size.

- By kind (:func:`kind_metrics`): the standard MVTec per-defect-type view, every metric of
  ``score_parts`` on the good images plus the images of one kind.
- By size (:func:`size_metrics`): GT regions (8-connected per image, as the engine labels them) fall
  into :data:`SIZE_BINS` by their area as a share of their image's pixels. A bin's positives are the
  pixels of its regions, its negatives all normal pixels of all images; the pixels of the other bins'
  regions are left out. AUPRO averages PRO over the bin's regions only, FPR over all normal pixels.
  All bins read one sort of all pixels: a subset of the sorted stream is still sorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from anorefine.errors import MetricError
from anorefine.metrics.compute import score_parts
from anorefine.metrics.engine import check_aupro_limit, sorted_pixel_metrics
from anorefine.metrics.names import AUPRO_LIMIT, SIZE_KEYS
from anorefine.metrics.ranking import sort_descending
from anorefine.metrics.regions import RegionNumbering

GOOD = "good"  # the kind of the normal images


@dataclass(frozen=True)
class SizeBin:
    """Regions with ``low <= area share < high`` (the last bin also holds share 1.0)."""

    key: str  # JSON-friendly name
    label: str
    low: float
    high: float


SIZE_BINS: tuple[SizeBin, ...] = (
    SizeBin("small", "<0.1%", 0.0, 0.001),
    SizeBin("medium", "0.1-1%", 0.001, 0.01),
    SizeBin("large", ">1%", 0.01, 1.0),
)


def size_bin_index(shares: np.ndarray) -> np.ndarray:
    """Index into :data:`SIZE_BINS` of each region's area share."""
    inner_edges = np.array([size_bin.low for size_bin in SIZE_BINS[1:]])
    return np.searchsorted(inner_edges, shares, side="right")


def size_metrics(
    maps: Sequence[Tensor], masks: Sequence[Tensor], aupro_limit: float = AUPRO_LIMIT
) -> dict[str, dict[str, float | int | None]]:
    """Per size bin key: ``regions`` (count), ``pixels`` (positive pixels), ``pixel_auroc``,
    ``pixel_ap`` and ``aupro`` (``None`` for a bin without regions); see the module docstring.

    ``maps``/``masks``: parts as for ``pixel_metrics``, each (N,H,W) float scores and bool masks.
    """
    check_aupro_limit(aupro_limit)
    numbering = RegionNumbering()
    group_keys, sorted_ids = sort_descending(maps, numbering.label_each(masks))
    sizes = numbering.sizes
    bin_of_region = torch.from_numpy(size_bin_index(numbering.shares.numpy()))
    results: dict[str, dict[str, float | int | None]] = {}
    for index, size_bin in enumerate(SIZE_BINS):
        in_bin = bin_of_region == index
        num_regions = int(in_bin.sum())
        result: dict[str, float | int | None] = {
            "regions": num_regions,
            "pixels": int(sizes[1:][in_bin].sum()),
            **dict.fromkeys(SIZE_KEYS),
        }
        if num_regions:
            # new ids: 0 normal, 1..num_regions this bin's regions, -1 the other bins' (left out)
            renumber = torch.full((sizes.numel(),), -1, dtype=torch.int32)
            renumber[0] = 0
            renumber[1:][in_bin] = torch.arange(1, num_regions + 1, dtype=torch.int32)
            new_ids = renumber.to(sorted_ids.device)[sorted_ids]
            kept = new_ids >= 0
            metrics = sorted_pixel_metrics(
                group_keys[kept], new_ids[kept], torch.cat([sizes[:1], sizes[1:][in_bin]]), aupro_limit
            )
            result.update(pixel_auroc=metrics.pixel_auroc, pixel_ap=metrics.pixel_ap, aupro=metrics.aupro)
        results[size_bin.key] = result
    return results


def kind_selections(kinds: Sequence[str]) -> dict[str, np.ndarray]:
    """Per defect kind (every distinct value but ``"good"``, sorted): a bool (N,) selection of the good
    images plus that kind's images (the kind's images alone when there is no good image)."""
    values = np.asarray(kinds, dtype=object)
    good = values == GOOD
    return {kind: good | (values == kind) for kind in sorted(set(kinds) - {GOOD})}


def select_images(parts: Sequence[Tensor], selected: np.ndarray) -> list[Tensor]:
    """The selected images (a bool (N,) over the images of all parts, in order) of (N_i,H,W) parts;
    parts left empty are dropped."""
    chosen, start = [], 0
    for part in parts:
        rows = np.flatnonzero(selected[start : start + part.shape[0]])
        start += part.shape[0]
        if rows.size:
            chosen.append(part[torch.from_numpy(rows).to(part.device)])
    return chosen


def kind_metrics(
    maps: Sequence[Tensor],
    masks: Sequence[Tensor] | None,
    image_scores: Tensor,
    labels: Tensor | None,
    kinds: Sequence[str],
    aupro_limit: float = AUPRO_LIMIT,
) -> dict[str, dict[str, float | None]]:
    """Per defect kind: every metric of ``score_parts`` on :func:`kind_selections`' images.

    Arguments as for ``score_parts``; ``kinds``: one entry per image, in order across the parts.
    ``score_parts`` raises ``MetricError`` for a kind whose masks hold no GT region.
    """
    if len(kinds) != image_scores.numel():
        raise MetricError(f"kinds has {len(kinds)} entries but there are {image_scores.numel()} images")
    results = {}
    for kind, selected in kind_selections(kinds).items():
        index = torch.from_numpy(np.flatnonzero(selected)).to(image_scores.device)
        results[kind] = score_parts(
            select_images(maps, selected),
            None if masks is None else select_images(masks, selected),
            image_scores[index],
            None if labels is None else labels[index],
            aupro_limit,
        )
    return results
