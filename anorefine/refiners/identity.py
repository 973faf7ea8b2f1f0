"""The baseline refiner: the coarse map upsampled bilinearly, then Gaussian σ=4."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anorefine.detectors.base import DetectorOutput
from anorefine.refiners.base import BASELINE_SIGMA, Refiner, baseline_map


class IdentityRefiner(Refiner):
    """Returns exactly the base pixel map, so every table row carries its own baseline."""

    def __init__(self, sigma: float = BASELINE_SIGMA) -> None:
        super().__init__()
        self.sigma = sigma

    @property
    def is_baseline(self) -> bool:
        """True when this refiner's map is exactly the base map (the default sigma)."""
        return self.sigma == BASELINE_SIGMA

    def forward(self, images: torch.Tensor, output: DetectorOutput) -> torch.Tensor:
        return baseline_map(output.anomaly_map, tuple(images.shape[-2:]), self.sigma)


@dataclass
class IdentityRefinerConfig:
    """Schema of conf/refiner/none.yaml."""

    _target_: str = "anorefine.refiners.identity.IdentityRefiner"
    name: str = "none"
    sigma: float = BASELINE_SIGMA
