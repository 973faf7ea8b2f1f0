"""The baseline refiner: the detector's own pixel map (``refiner=none``)."""

from __future__ import annotations

import torch

from anorefine.detectors.base import DetectorOutput
from anorefine.refiners.base import Refiner, base_map, baseline_map
from anorefine.shapes import spatial_size


class BaselineRefiner(Refiner):
    """Returns the base pixel map (bilinear upsampling, then the detector's blur, σ=4 for most), so
    every table row carries its own baseline; ``sigma`` gives the same construction with another blur,
    an ablation of the baseline itself."""

    def __init__(self, sigma: float | None = None) -> None:
        """``sigma``: None = the detector's own convention."""
        super().__init__()
        self.sigma = sigma

    @property
    def returns_base_map(self) -> bool:
        """True without a sigma of its own: the refined map is then exactly the base map."""
        return self.sigma is None

    def forward(self, images: torch.Tensor, output: DetectorOutput) -> torch.Tensor:
        size = spatial_size(images)
        if self.sigma is None:
            return base_map(output, size)
        return baseline_map(output.anomaly_map, size, output.baseline._replace(sigma=self.sigma))
