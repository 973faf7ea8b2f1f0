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

Read from the engine's single sorted stream: the pixels with ``score > t_k`` are exactly the tie
groups ranked before ``t_k``, so FP_k and PRO_k are the cumulative counts at the last group end whose
score exceeds ``t_k``. Streaming stops once the FPR passes ``fpr_limit``: later thresholds are dropped.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from anorefine.metrics.ranking import GroupChunk, descending_keys


def _round_down(values: Tensor, dtype: torch.dtype) -> Tensor:
    """float64 ``values`` in ``dtype``, rounded down so that ``s > t`` is unchanged for any ``s`` in dtype."""
    cast = values.to(dtype)
    too_big = cast.to(torch.float64) > values
    return torch.where(too_big, torch.nextafter(cast, cast.new_tensor(-torch.inf)), cast)


class ProCompatCurve:
    """Paper-compat PRO accumulated over the streamed tie groups (see the module docstring).

    ``low``/``high``: the extreme scores; ``dtype``: the scores' dtype (float32 or float64).
    """

    def __init__(
        self,
        num_normal: int,
        num_regions: int,
        low: float,
        high: float,
        dtype: torch.dtype,
        num_thresholds: int = 200,
        fpr_limit: float = 0.3,
    ) -> None:
        self.num_normal, self.fpr_limit = num_normal, fpr_limit
        self.defined = num_regions > 0 and num_normal > 0 and low < high and not math.isinf(high - low)
        self.done = not self.defined
        steps = torch.arange(num_thresholds, dtype=torch.float64)
        thresholds = _round_down(low + steps * ((high - low) / num_thresholds), dtype)
        self.threshold_keys = descending_keys(thresholds)  # score > t_k  <=>  key < threshold_keys[k]
        self.fp = torch.zeros(num_thresholds, dtype=torch.float64)
        self.pro = torch.zeros(num_thresholds, dtype=torch.float64)
        self.last_end_key: Tensor | None = None

    def update(self, chunk: GroupChunk, pro_cumulated: Tensor) -> None:
        """Record FP and PRO at the last group end above each threshold; ``pro_cumulated`` per position."""
        if self.done or chunk.local_ends.numel() == 0:
            return
        end_keys = chunk.keys[chunk.local_ends]
        if self.threshold_keys.device != end_keys.device:
            self.threshold_keys = self.threshold_keys.to(end_keys.device)
            self.fp, self.pro = self.fp.to(end_keys.device), self.pro.to(end_keys.device)
        above = torch.searchsorted(end_keys, self.threshold_keys)  # group ends with key < t_k's key
        hit = above > 0
        last = above[hit] - 1
        self.fp[hit] = chunk.fp[last]
        self.pro[hit] = pro_cumulated[chunk.local_ends[last]]
        self.last_end_key = end_keys[-1]
        self.done = float(chunk.fp[-1]) >= self.fpr_limit * self.num_normal

    @property
    def value(self) -> float | None:
        """The area; ``None`` when undefined (no region or normal pixel, constant or infinite scores,
        fewer than two distinct FPRs below the limit)."""
        if not self.defined:
            return None
        fpr = self.fp / self.num_normal
        # stopped at the limit: thresholds below the last group seen have FPR >= limit
        if self.done and self.last_end_key is not None:
            fpr[self.threshold_keys > self.last_end_key] = math.inf
        kept = fpr < self.fpr_limit
        fpr, pro = fpr[kept], self.pro[kept]
        if fpr.numel() < 2 or float(fpr.max()) == float(fpr.min()):
            return None
        rescaled = (fpr - fpr.min()) / (fpr.max() - fpr.min())
        # thresholds ascend, so FPR descends: flip to integrate left to right
        return float(torch.trapezoid(pro.flip(0), rescaled.flip(0)))
