"""All pixel threshold metrics from one global descending sort of every pixel score.

The pixels of every image are sorted once (:mod:`anorefine.metrics.ranking`) with their GT region id
(8-connected, labelled once per image on the CPU) packed beside the score, then streamed once, tie
group by tie group: pixel AUROC, AP, F1-max and IoU-max come from the cumulative positive counts at
the group ends, and AUPRO (MVTec definition) from the same stream: a normal pixel adds
``1 / num_normal_pixels`` to the FPR and a pixel of GT region ``r`` adds ``1 / (|r| * num_regions)``
to the PRO, so the cumulative sums of these weights at the group ends are the PRO curve. The curve
starts at (0, 0), is integrated with the trapezoid rule up to FPR = ``limit`` with PRO linearly
interpolated at exactly ``limit``, and is divided by ``limit``. The 200-threshold PRO reads the same
stream (:mod:`anorefine.metrics.pro_compat`). Hand-rolled rather than torchmetrics/anomalib: those
sort once per metric, cumulate in float32 and (torchmetrics) squash scores outside [0, 1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from anorefine.errors import MetricError
from anorefine.metrics.names import AUPRO_LIMIT
from anorefine.metrics.pro_compat import ProCompatCurve
from anorefine.metrics.ranking import GroupChunk, RankingCurves, iter_groups, key_to_score, sort_descending
from anorefine.metrics.regions import RegionNumbering


@dataclass(frozen=True)
class PixelMetrics:
    """Pixel-level metrics under their results.json names; ``f1_threshold`` is the score at which F1
    is maximal (``score >= t``)."""

    pixel_auroc: float | None
    pixel_ap: float | None
    pixel_f1_max: float | None
    f1_threshold: float | None
    pixel_iou_max: float | None
    aupro: float | None
    pro_compat: float | None

    def values(self) -> dict[str, float | None]:
        """The metrics (everything but the threshold)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "f1_threshold"}


class ProCurve:
    """AUPRO accumulated over the streamed tie groups until the FPR passes ``limit``."""

    def __init__(self, sizes: Tensor, limit: float, device: torch.device) -> None:
        num_regions = sizes.numel() - 1
        self.weights = torch.zeros(num_regions + 1, dtype=torch.float64)
        self.weights[1:] = 1.0 / (sizes[1:].to(torch.float64) * num_regions)
        self.weights = self.weights.to(device)
        self.num_normal, self.limit = int(sizes[0]), limit
        self.area, self.pro_before = 0.0, 0.0
        self.last_point = (0.0, 0.0)  # the curve starts at (0, 0)
        self.done = False

    def cumulate(self, chunk: GroupChunk) -> Tensor:
        """The PRO (mean region overlap) ranked at or above every position of the chunk."""
        pro_cumulated = self.weights[chunk.payload].cumsum(0)
        pro_cumulated += self.pro_before
        self.pro_before = float(pro_cumulated[-1])
        return pro_cumulated

    def update(self, chunk: GroupChunk, pro_cumulated: Tensor) -> None:
        """Add the groups of one chunk (nothing once the limit is passed)."""
        if self.done or chunk.local_ends.numel() == 0:
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


def check_aupro_limit(aupro_limit: float) -> None:
    """Raise ``MetricError`` unless ``0 < aupro_limit <= 1``."""
    if not 0.0 < aupro_limit <= 1.0:
        raise MetricError(f"aupro_limit must be in (0, 1], got {aupro_limit}")


def pixel_metrics(
    maps: Sequence[Tensor], masks: Sequence[Tensor], aupro_limit: float = AUPRO_LIMIT
) -> PixelMetrics:
    """Pixel AUROC, AP, F1-max (+ its threshold), IoU-max, AUPRO and paper-compat PRO, in one pass.

    ``maps``/``masks``: parts, each (N,H,W) float scores and bool masks of the same shape (sizes may
    differ between parts); every pixel of every part is one sample. Peak extra memory: 8 bytes per
    pixel (float32 scores) plus one part's labels and fixed-size chunk temporaries.
    Raises ``MetricError`` when there is no GT region (AUPRO is undefined).
    """
    check_aupro_limit(aupro_limit)
    numbering = RegionNumbering()
    group_keys, sorted_ids = sort_descending(maps, numbering.label_each(masks))
    if numbering.num_regions == 0:
        raise MetricError(
            "AUPRO is undefined: no ground-truth mask has an anomalous pixel; "
            "evaluate pixel metrics on a set that contains at least one defective image"
        )
    return sorted_pixel_metrics(group_keys, sorted_ids, numbering.sizes, aupro_limit)


def sorted_pixel_metrics(
    group_keys: Tensor, sorted_ids: Tensor, sizes: Tensor, aupro_limit: float = AUPRO_LIMIT
) -> PixelMetrics:
    """The metrics of pixels already sorted by :func:`sort_descending`: the core of :func:`pixel_metrics`.

    ``sorted_ids``: each pixel's GT region id (0 normal, regions 1..R), aligned with ``group_keys``;
    ``sizes``: pixel count per id 0..R (int64, CPU), R >= 1. Any subset of a sorted stream is still
    sorted, so a subset of pixels with renumbered region ids can be scored without sorting again.
    """
    curves = RankingCurves(int(sizes[1:].sum()), int(sizes[0]))
    pro_curve = ProCurve(sizes, aupro_limit, group_keys.device)
    compat = ProCompatCurve(
        int(sizes[0]),
        sizes.numel() - 1,
        low=key_to_score(group_keys[-1]),
        high=key_to_score(group_keys[0]),
        dtype=torch.float32 if group_keys.dtype == torch.int32 else torch.float64,
    )
    for chunk in iter_groups(group_keys, sorted_ids):
        curves.update(chunk)
        if not (pro_curve.done and compat.done):
            pro_cumulated = pro_curve.cumulate(chunk)
            pro_curve.update(chunk, pro_cumulated)
            compat.update(chunk, pro_cumulated)
    return PixelMetrics(
        pixel_auroc=curves.auroc,
        pixel_ap=curves.average_precision,
        pixel_f1_max=curves.f1_max,
        f1_threshold=curves.f1_threshold,
        pixel_iou_max=curves.iou_max,
        aupro=pro_curve.aupro,
        pro_compat=compat.value,
    )
