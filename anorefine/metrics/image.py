"""Image-level AUROC and AP, exact (sklearn-equivalent), on the shared ranking core.

Not torchmetrics' BinaryAUROC/BinaryAveragePrecision: they squash scores outside [0, 1] with a
sigmoid, which can merge distinct scores.
"""

from __future__ import annotations

import torch
from torch import Tensor

from anorefine.metrics.ranking import ranking_curves


def image_metrics(image_scores: Tensor, labels: Tensor) -> tuple[float | None, float | None]:
    """(AUROC, AP) of per-image scores against bool labels; ``None`` where a class is missing."""
    curves = ranking_curves(image_scores.reshape(-1), labels.reshape(-1).to(torch.int32))
    return curves.auroc, curves.average_precision
