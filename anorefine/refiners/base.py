"""The refiner contract, the protocol of trainable refiners, and the baseline pixel map."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from anorefine.detectors.base import DEFAULT_BLUR, BaselineBlur, Detector, DetectorOutput
from anorefine.refiners import separable


#: Gaussian sigma of the baseline map (PatchCore / AnomalyCLIP convention).
def baseline_map(
    anomaly_map: torch.Tensor, size: tuple[int, int], blur: BaselineBlur = DEFAULT_BLUR
) -> torch.Tensor:
    """Coarse (B,1,h,w) map -> float32 (B,1,H,W): bilinear upsampling, then the Gaussian blur of radius
    int(4σ + 0.5) with the border ``padding`` (``reflect``: anomalib's GaussianBlur2d; ``symmetric``:
    scipy's gaussian_filter). Both run as two matrix products (``separable``) instead of anomalib's
    33×33 2-D convolution, which dominated the ARD's CPU inference (make bench); equal to 1e-5 (tests)."""
    return separable.smooth(anomaly_map.float(), size, blur.sigma, blur.align_corners, blur.padding)


def base_map(output: DetectorOutput, size: tuple[int, int]) -> torch.Tensor:
    """The detector's own pixel map: ``baseline_map`` with the detector's ``BaselineBlur``."""
    return baseline_map(output.anomaly_map, size, output.baseline)


class Refiner(nn.Module):
    """Turns a detector's coarse output into a pixel-level map at the images' resolution.

    The run and the curricula talk to a refiner only through the members declared here.
    """

    #: True when the refiner has weights that a curriculum must train first (see ``TrainableRefiner``).
    trainable: bool = False
    #: True when each map is optimised at test time (F2PAD): such a refiner runs in PyTorch only (no export).
    optimises_at_test_time: bool = False

    @property
    def returns_base_map(self) -> bool:
        """True when the refined map is exactly the base map (the run then scores it once)."""
        return False

    def attach(self, detector: Detector) -> None:
        """Receive the fitted detector before testing; refiners that re-run it (F2PAD views) keep it."""

    def image_score(self, refined: torch.Tensor, detector_score: torch.Tensor) -> torch.Tensor:
        """The image score that goes with a (B,1,H,W) refined map: the detector's, by default."""
        return detector_score

    def timing(self) -> dict[str, float | int] | None:
        """Per-image cost of the refinements so far, recorded in results.json (None: not measured)."""
        return None

    def forward(self, images: torch.Tensor, output: DetectorOutput) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@runtime_checkable
class TrainableRefiner(Protocol):
    """What a curriculum that trains a refiner (PGT) needs from it; the ARD implements it."""

    trainable: bool

    @property
    def is_built(self) -> bool: ...

    @property
    def cue_channels(self) -> int: ...

    def calibrate(self, anomaly_maps: torch.Tensor, features: torch.Tensor) -> None: ...

    def build(self, output: DetectorOutput, size: tuple[int, int]) -> None: ...

    def pixel_cues(self, images: torch.Tensor, anomaly_map: torch.Tensor) -> torch.Tensor | None: ...

    def estimates(
        self, images: torch.Tensor, output: DetectorOutput, cues: torch.Tensor | None = None
    ) -> list[torch.Tensor]: ...

    def probability(self, estimate: torch.Tensor) -> torch.Tensor: ...

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def start_training(self) -> None: ...
