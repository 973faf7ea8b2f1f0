"""The refiner contract and the baseline pixel map shared by every refiner."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from anomalib.models.components import GaussianBlur2d
from torch import nn

from anorefine.detectors.base import Detector, DetectorOutput

#: Gaussian sigma of the baseline map (PatchCore / AnomalyCLIP convention).
BASELINE_SIGMA = 4.0


def baseline_map(
    anomaly_map: torch.Tensor, size: tuple[int, int], sigma: float = BASELINE_SIGMA
) -> torch.Tensor:
    """Coarse (B,1,h,w) map -> (B,1,H,W): bilinear upsampling, then Gaussian blur (anomalib's kernel)."""
    upsampled = F.interpolate(anomaly_map.float(), size=size, mode="bilinear", align_corners=False)
    if sigma <= 0:
        return upsampled
    kernel = 2 * int(4.0 * sigma + 0.5) + 1
    blur = GaussianBlur2d(sigma=(sigma, sigma), channels=1, kernel_size=(kernel, kernel)).to(upsampled.device)
    return blur(upsampled)


class Refiner(nn.Module):
    """Turns a detector's coarse output into a pixel-level map at the images' resolution."""

    #: True when the refiner has weights trained by a curriculum (ARD); False for identity / F2PAD.
    trainable: bool = False

    def attach(self, detector: Detector) -> None:
        """Receive the fitted detector before testing; refiners that re-run it (F2PAD views) keep it."""

    def forward(self, images: torch.Tensor, output: DetectorOutput) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
