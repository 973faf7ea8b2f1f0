"""``AnomalyMetrics``: a torchmetrics ``Metric`` that keeps batches compactly and scores them in one pass."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from anorefine.errors import MetricError
from anorefine.metrics.compute import score_parts
from anorefine.metrics.inputs import (
    ArrayLike,
    prepare_labels,
    prepare_maps,
    prepare_masks,
    prepare_scores,
)
from anorefine.metrics.names import AUPRO_LIMIT


class AnomalyMetrics(Metric):
    """Accumulate maps, masks, image scores and labels; ``compute()`` returns ``compute_metrics``'s dict.

    Storage is compact: per batch, the maps in their own float32/float64 precision (never narrowed)
    and the masks as bool (5 bytes per pixel for float32 maps); nothing is concatenated at
    ``compute()``, which streams the batches into one sort (8 more bytes per pixel while it runs).
    Batches may differ in map size (e.g. maps at each image's original size). ``reset()`` frees the
    storage. Pixel metrics are ``None`` if any accumulated image has no mask. Feed it with
    ``update()``: calling the metric on a batch would compute the metrics of that batch alone.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    #: The list states ``add_state`` registers (one tensor per ``update`` call).
    anomaly_maps: list[torch.Tensor]
    gt_masks: list[torch.Tensor]
    image_scores: list[torch.Tensor]
    labels: list[torch.Tensor]
    has_mask: list[torch.Tensor]

    def __init__(self, aupro_limit: float = AUPRO_LIMIT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aupro_limit = aupro_limit
        for name in ("anomaly_maps", "gt_masks", "image_scores", "labels", "has_mask"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        anomaly_maps: ArrayLike,
        gt_masks: ArrayLike | None = None,
        image_scores: ArrayLike | None = None,
        labels: ArrayLike | None = None,
        has_mask: bool | ArrayLike | None = None,
    ) -> None:
        """Add a batch: maps (B,H,W)/(B,1,H,W), masks of that shape or ``None``, scores and labels (B,).

        ``has_mask`` (a bool or a (B,) vector) defaults to whether ``gt_masks`` is given; ``labels``
        default to the masks' content, so they are required for images without a mask.
        """
        maps = prepare_maps(anomaly_maps)
        count, device = maps.shape[0], maps.device
        if gt_masks is None:
            masks = torch.zeros(maps.shape, dtype=torch.bool, device=device)
        else:
            masks = prepare_masks(gt_masks, maps.shape, device)
        if has_mask is None:
            has_mask = gt_masks is not None
        mask_flags = torch.as_tensor(has_mask, device=device).to(torch.bool).reshape(-1)
        if mask_flags.numel() not in (1, count):
            raise MetricError(f"has_mask has {mask_flags.numel()} entries but there are {count} images")
        mask_flags = mask_flags.expand(count)
        if bool(mask_flags.any()) and gt_masks is None:
            raise MetricError("has_mask is true but gt_masks is None")
        if labels is not None:
            image_labels = prepare_labels(labels, count, device)
        elif bool(mask_flags.all()):
            image_labels = masks.flatten(1).any(1)
        else:
            raise MetricError("labels are required for a batch with images that have no mask")
        scores = (
            maps.flatten(1).amax(1) if image_scores is None else prepare_scores(image_scores, count, device)
        )
        self.anomaly_maps.append(maps)
        self.gt_masks.append(masks)
        self.image_scores.append(scores)
        self.labels.append(image_labels)
        self.has_mask.append(mask_flags.clone())

    def compute(self) -> dict[str, float | None]:
        """The metrics of everything accumulated since the last reset."""
        return self.compute_since(0)

    def compute_since(self, start: int) -> dict[str, float | None]:
        """The metrics of the batches accumulated after the first ``start`` ones (``len(anomaly_maps)``
        is the number of batches so far)."""
        if len(self.anomaly_maps) <= start:
            raise MetricError("AnomalyMetrics.compute() called before any update()")
        has_mask = bool(torch.cat(self.has_mask[start:]).all())
        return score_parts(
            self.anomaly_maps[start:],
            self.gt_masks[start:] if has_mask else None,
            dim_zero_cat(self.image_scores[start:]),
            dim_zero_cat(self.labels[start:]),
            aupro_limit=self.aupro_limit,
        )

    def pixel_ap_since(self, start: int) -> float | None:
        """Pixel AP of the batches after the first ``start`` ones; ``None`` if there are none, if one
        lacks a mask or if they hold no anomalous pixel."""
        if len(self.anomaly_maps) <= start or not any(bool(m.any()) for m in self.gt_masks[start:]):
            return None
        return self.compute_since(start)["pixel_ap"]
