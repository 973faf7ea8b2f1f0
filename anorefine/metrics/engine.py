"""All pixel threshold metrics from one global descending sort of every pixel score.

The sorted pixels are streamed once, tie group by tie group (:mod:`anorefine.metrics.ranking`):
pixel AUROC, AP, F1-max and IoU-max come from the cumulative positive counts at the group ends,
and AUPRO (MVTec definition) from the same stream: a normal pixel adds ``1 / num_normal_pixels``
to the FPR and a pixel of GT region ``r`` adds ``1 / (|r| * num_regions)`` to the PRO, so the
cumulative sums of these weights at the group ends are the PRO curve. The curve starts at (0, 0),
is integrated with the trapezoid rule up to FPR = ``limit`` with PRO linearly interpolated at
exactly ``limit``, and is divided by ``limit``. Hand-rolled rather than torchmetrics/anomalib:
those sort once per metric, cumulate in float32 and (torchmetrics) squash scores outside [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from anorefine.errors import MetricError
from anorefine.metrics.ranking import GroupChunk, RankingCurves, iter_groups, sort_descending
from anorefine.metrics.regions import region_sizes


@dataclass(frozen=True)
class PixelMetrics:
    """Pixel-level metrics; ``f1_threshold`` is the score at which F1 is maximal (``score >= t``)."""

    auroc: float | None
    average_precision: float | None
    f1_max: float | None
    f1_threshold: float | None
    iou_max: float | None
    aupro: float | None


class ProCurve:
    """AUPRO accumulated over the streamed tie groups until the FPR passes ``limit``."""

    def __init__(self, sizes: Tensor, limit: float) -> None:
        num_regions = sizes.numel() - 1
        self.weights = torch.zeros(num_regions + 1, dtype=torch.float64, device=sizes.device)
        self.weights[1:] = 1.0 / (sizes[1:].to(torch.float64) * num_regions)
        self.num_normal, self.limit = int(sizes[0]), limit
        self.area, self.pro_before = 0.0, 0.0
        self.last_point = (0.0, 0.0)  # the curve starts at (0, 0)
        self.done = False

    def update(self, chunk: GroupChunk) -> None:
        """Add the groups of one chunk (nothing once the limit is passed)."""
        if self.done:
            return
        pro_cumulated = self.weights[chunk.payload].cumsum(0)
        pro_cumulated += self.pro_before
        self.pro_before = float(pro_cumulated[-1])
        if chunk.local_ends.numel() == 0:
            return
        fpr = torch.cat([chunk.fp.new_tensor(self.last_point[:1]), chunk.fp / self.num_normal])
        pro = torch.cat([chunk.fp.new_tensor(self.last_point[1:]), pro_cumulated[chunk.local_ends]])
        inside = int((fpr <= self.limit).sum())  # FPR never decreases: the first `inside` points
        self.area += float(torch.trapezoid(pro[:inside], fpr[:inside]))
        if inside == fpr.numel():
            self.last_point = (float(fpr[-1]), float(pro[-1]))
            return
        x0, x1 = float(fpr[inside - 1]), float(fpr[inside])
        y0, y1 = float(pro[inside - 1]), float(pro[inside])
        if x0 < self.limit:  # interpolate PRO at exactly the limit
            y_limit = y0 + (y1 - y0) * (self.limit - x0) / (x1 - x0)
            self.area += 0.5 * (y0 + y_limit) * (self.limit - x0)
        self.done = True

    @property
    def aupro(self) -> float | None:
        """Area up to the limit divided by the limit; ``None`` without normal pixels."""
        return self.area / self.limit if self.num_normal else None


def pixel_metrics(
    scores: Tensor, region_ids: Tensor, num_regions: int, aupro_limit: float = 0.3
) -> PixelMetrics:
    """Pixel AUROC, AP, F1-max (+ its threshold), IoU-max and AUPRO of flat scores and region ids.

    ``region_ids`` (int32, same length as ``scores``): 0 for normal pixels, 1..R for GT regions.
    Raises ``MetricError`` when there is no GT region (AUPRO is undefined).
    """
    if num_regions == 0:
        raise MetricError(
            "AUPRO is undefined: no ground-truth mask has an anomalous pixel; "
            "evaluate pixel metrics on a set that contains at least one defective image"
        )
    if not 0.0 < aupro_limit <= 1.0:
        raise MetricError(f"aupro_limit must be in (0, 1], got {aupro_limit}")
    sizes = region_sizes(region_ids, num_regions)
    curves = RankingCurves(int(sizes[1:].sum()), int(sizes[0]))
    pro_curve = ProCurve(sizes, aupro_limit)
    for chunk in iter_groups(*sort_descending(scores, region_ids)):
        curves.update(chunk)
        pro_curve.update(chunk)
    return PixelMetrics(
        auroc=curves.auroc,
        average_precision=curves.average_precision,
        f1_max=curves.f1_max,
        f1_threshold=curves.f1_threshold,
        iou_max=curves.iou_max,
        aupro=pro_curve.aupro,
    )
