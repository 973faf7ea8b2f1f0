"""The baseline refiner: the coarse map upsampled bilinearly, then Gaussian σ=4 (``refiner=none``)."""

from __future__ import annotations

import torch

from anorefine.detectors.base import DetectorOutput
from anorefine.refiners.base import BASELINE_SIGMA, Refiner, baseline_map


class BaselineRefiner(Refiner):
    """Returns the base pixel map, so every table row carries its own baseline (another ``sigma``
    gives the same construction with another blur, an ablation of the baseline itself)."""

    def __init__(self, sigma: float = BASELINE_SIGMA) -> None:
        super().__init__()
        self.sigma = sigma

    @property
    def returns_base_map(self) -> bool:
        """True at the default sigma: the refined map is then exactly the base map."""
        return self.sigma == BASELINE_SIGMA

    def forward(self, images: torch.Tensor, output: DetectorOutput) -> torch.Tensor:
        return baseline_map(output.anomaly_map, tuple(images.shape[-2:]), self.sigma)
