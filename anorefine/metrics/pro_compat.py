"""The 200-threshold "paper-compat" PRO of AnomalyCLIP and most zero-shot papers (not MVTec's AUPRO).

Definition, as those papers compute it:

1. ``K = 200`` thresholds ``t_k = min + k * (max - min) / K``, ``k = 0..K-1``, over all scores of
   all images (float64 arithmetic; exactly ``K`` thresholds, where ``np.arange`` may round to K+1).
2. At each threshold a pixel is predicted anomalous iff ``score > t_k`` (strict).
3. PRO_k: for every GT region (8-connected component of each image's mask, as
   ``skimage.measure.label``/``regionprops`` give), the fraction of its pixels predicted anomalous,
   averaged over all regions of all images. FPR_k: predicted-anomalous normal pixels over all normal
   pixels of all images.
4. Keep the thresholds with ``FPR_k < fpr_limit`` (0.3), min-max rescale those FPRs to [0, 1], and
   take the trapezoid area under PRO against the rescaled FPR.

Vectorised: each pixel's count of thresholds below its score, ``c = #{k : t_k < score}``, makes it
positive at exactly the thresholds ``k < c``; histograms of ``c`` (pixel counts for normal pixels,
``1 / (|r| * R)`` weights for region pixels) give every FP_k and PRO_k by reverse cumulative sums.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from anorefine.metrics.regions import region_sizes

_CHUNK = 1 << 21


def _round_down(values: Tensor, dtype: torch.dtype) -> Tensor:
    """float64 ``values`` in ``dtype``, rounded down so that ``s > t`` is unchanged for any ``s`` in dtype."""
    cast = values.to(dtype)
    too_big = cast.to(torch.float64) > values
    return torch.where(too_big, torch.nextafter(cast, cast.new_tensor(-torch.inf)), cast)


def pro_compat(
    scores: Tensor, region_ids: Tensor, num_regions: int, num_thresholds: int = 200, fpr_limit: float = 0.3
) -> float | None:
    """Paper-compat PRO of flat ``scores`` and int32 ``region_ids`` (0 normal, 1..R regions).

    ``None`` when it is undefined: no region, no normal pixel, constant or infinite extreme scores,
    or fewer than two distinct FPRs below ``fpr_limit``.
    """
    sizes = region_sizes(region_ids, num_regions)
    num_normal = int(sizes[0])
    low, high = float(scores.min()), float(scores.max())
    if num_regions == 0 or num_normal == 0 or not low < high or math.isinf(high - low):
        return None
    steps = torch.arange(num_thresholds, dtype=torch.float64, device=scores.device)
    thresholds = _round_down(low + steps * ((high - low) / num_thresholds), scores.dtype)
    pro_weights = torch.zeros(num_regions + 1, dtype=torch.float64, device=scores.device)
    pro_weights[1:] = 1.0 / (sizes[1:].to(torch.float64) * num_regions)
    normal_weights = torch.zeros_like(pro_weights)
    normal_weights[0] = 1.0
    normal_hist = torch.zeros(num_thresholds + 1, dtype=torch.float64, device=scores.device)
    pro_hist = torch.zeros_like(normal_hist)
    for start in range(0, scores.numel(), _CHUNK):
        below = torch.bucketize(scores[start : start + _CHUNK], thresholds)  # #thresholds < score
        ids = region_ids[start : start + _CHUNK]
        normal_hist += torch.bincount(below, normal_weights[ids], minlength=num_thresholds + 1)
        pro_hist += torch.bincount(below, pro_weights[ids], minlength=num_thresholds + 1)
    # positive at threshold k  <=>  c > k: sum the histograms over c = k+1 .. K
    fpr = normal_hist.flip(0).cumsum(0).flip(0)[1:] / num_normal
    pro = pro_hist.flip(0).cumsum(0).flip(0)[1:]
    kept = fpr < fpr_limit
    fpr, pro = fpr[kept], pro[kept]
    if fpr.numel() < 2 or float(fpr.max()) == float(fpr.min()):
        return None
    rescaled = (fpr - fpr.min()) / (fpr.max() - fpr.min())
    # thresholds ascend, so FPR descends: flip to integrate left to right
    return float(torch.trapezoid(pro.flip(0), rescaled.flip(0)))
