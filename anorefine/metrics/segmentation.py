"""Threshold-dependent pixel metrics of binarised maps over a whole test set: SegF1 and IoU.

- ``seg_f1``: MVTec AD 2's SegF1 (Heckler-Kram et al., "The MVTec AD 2 Dataset", arXiv 2503.21622):
  the pixel F1 of the thresholded anomaly images against the ground truth,
  ``2·TP / (2·TP + FP + FN)`` with the counts pooled over every pixel of every test image (not a mean
  of per-image F1s). A normal image adds only false positives (its marked pixels) and true negatives.
  The pooling is our reading of the paper's pixel-level F1 (the server's code is not public; public
  re-implementations by VAND 2025 challenge entrants pool the same way).
- ``seg_iou``: the intersection over union of the defect class, ``TP / (TP + FP + FN)``, pooled alike.

Both are ``None`` when they are undefined: no defect pixel in the ground truth and none marked (0/0).
With defect pixels on neither side but marked normal pixels they are 0.

The counts are torchmetrics' ``BinaryStatScores`` states (int64 sums, bounded memory, summed across
processes); one state gives both metrics, where ``BinaryF1Score`` and ``BinaryJaccardIndex`` would each
count every pixel again and report a chosen number for 0/0. The masks are binarised by the caller
(``map > threshold``, or MEBin's masks: anorefine.metrics.thresholds): torchmetrics would pass raw float
scores outside [0, 1] through a sigmoid, batch by batch, before its own threshold.
"""

from __future__ import annotations

from typing import Any

from torchmetrics.classification import BinaryStatScores

from anorefine.metrics.inputs import ArrayLike, prepare_binary, prepare_masks


class SegmentationScores(BinaryStatScores):
    """Accumulate TP, FP, FN (and TN) of binarised maps batch by batch; ``compute()`` returns
    ``{"seg_f1": ..., "seg_iou": ...}`` (module docstring). Batches may differ in size."""

    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate_args=False, **kwargs)  # the inputs are checked in update()

    def update(self, pred_masks: ArrayLike, gt_masks: ArrayLike) -> None:
        """Add a batch: predicted and ground-truth masks (N,H,W) or (N,1,H,W), each bool, {0,1} or
        {0,255}; a normal image's ground truth is all zero."""
        predicted = prepare_binary(pred_masks, "pred_masks")
        super().update(predicted, prepare_masks(gt_masks, predicted.shape, predicted.device))

    def compute(self) -> dict[str, float | None]:  # type: ignore[override]  # two metrics, not one tensor
        """SegF1 and IoU of everything accumulated since the last reset."""
        tp, fp, _, fn = (int(count) for count in self._final_state())
        errors = fp + fn
        if tp + errors == 0:
            return {"seg_f1": None, "seg_iou": None}
        return {"seg_f1": 2 * tp / (2 * tp + errors), "seg_iou": tp / (tp + errors)}
