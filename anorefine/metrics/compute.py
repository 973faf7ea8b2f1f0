"""``compute_metrics``: every image and pixel metric of one evaluation set, in one call.

Definitions (all on raw scores, thresholds at every distinct score, ``score >= t`` is anomalous):

- ``image_auroc`` / ``image_ap``: sklearn's ``roc_auc_score`` / ``average_precision_score`` of the
  image scores (default: each map's maximum) against the labels.
- ``pixel_auroc`` / ``pixel_ap``: the same over all pixels of all images.
- ``pixel_f1_max`` / ``pixel_iou_max``: the maximum over thresholds of F1 and of TP / (TP + FP + FN).
- ``aupro``: MVTec AUPRO@``aupro_limit`` (8-connected GT regions per image, FPR over all normal
  pixels, PRO averaged over all regions, trapezoid to the limit, divided by it); see ``engine``.
- ``pro_compat``: the 200-threshold PRO of AnomalyCLIP and zero-shot papers; see ``pro_compat``.

All pixel metrics come from one sort of all pixels (``engine``).
- ``boundary_f1``: contour F1 at the F1-max threshold, 2 px Euclidean tolerance; see ``boundary``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from anorefine.metrics.boundary import boundary_f1
from anorefine.metrics.engine import pixel_metrics
from anorefine.metrics.image import image_metrics
from anorefine.metrics.inputs import ArrayLike, prepare_labels, prepare_maps, prepare_masks, prepare_scores
from anorefine.metrics.names import AUPRO_LIMIT, METRIC_KEYS


def compute_metrics(
    anomaly_maps: ArrayLike,
    gt_masks: ArrayLike | None = None,
    image_scores: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    aupro_limit: float = AUPRO_LIMIT,
) -> dict[str, float | None]:
    """Image and pixel metrics of raw anomaly maps; every key of ``METRIC_KEYS`` is present.

    Args:
        anomaly_maps: (N,H,W) or (N,1,H,W) raw scores, numpy or torch on any device; higher = more
            anomalous. Never squashed; float32/float64 keep their precision.
        gt_masks: same shape, bool / {0,1} / {0,255}; ``None`` makes every pixel metric ``None``.
        image_scores: (N,) image scores; default: the maximum of each map.
        labels: (N,) image labels, 1 = anomalous; default: whether the mask has a positive pixel
            (image metrics are ``None`` when there are neither labels nor masks).
        aupro_limit: FPR integration limit of AUPRO.

    Values are Python floats, or ``None`` where undefined (e.g. AUROC with one class).
    Raises ``MetricError`` for malformed inputs and when masks are given but contain no GT region.
    """
    maps = prepare_maps(anomaly_maps)
    count, device = maps.shape[0], maps.device
    masks = None if gt_masks is None else prepare_masks(gt_masks, maps.shape, device)
    scores = maps.flatten(1).amax(1) if image_scores is None else prepare_scores(image_scores, count, device)
    if labels is not None:
        image_labels: Tensor | None = prepare_labels(labels, count, device)
    else:
        image_labels = None if masks is None else masks.flatten(1).any(1)
    return score_parts([maps], None if masks is None else [masks], scores, image_labels, aupro_limit)


def score_parts(
    maps: Sequence[Tensor],
    masks: Sequence[Tensor] | None,
    image_scores: Tensor,
    labels: Tensor | None,
    aupro_limit: float = AUPRO_LIMIT,
) -> dict[str, float | None]:
    """``compute_metrics`` on validated parts: (N,H,W) maps and bool masks (sizes may differ between
    parts), the (N_total,) image scores and bool labels (``None``: no image metrics)."""
    results: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    if labels is not None:
        results["image_auroc"], results["image_ap"] = image_metrics(image_scores, labels)
    if masks is None:
        return results
    pixel = pixel_metrics(maps, masks, aupro_limit)
    results.update(pixel.values())
    if pixel.f1_threshold is not None:
        results["boundary_f1"] = boundary_f1(maps, masks, pixel.f1_threshold)
    return results
