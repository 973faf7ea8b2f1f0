"""The refiner contract, the protocol of trainable refiners, and the baseline pixel map."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from anomalib.models.components import GaussianBlur2d
from torch import nn

from anorefine.detectors.base import Detector, DetectorOutput

#: Gaussian sigma of the baseline map (PatchCore / AnomalyCLIP convention).
BASELINE_SIGMA = 4.0


def symmetric_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B,1,H,W) equal to ``scipy.ndimage.gaussian_filter(x, sigma, truncate=4)``: the
    same normalised kernel of radius int(4σ + 0.5), the border padded by mirroring with the edge pixel
    repeated (scipy's ``reflect``; torch's ``reflect`` skips the edge pixel)."""
    radius = int(4.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    for dim in (-1, -2):
        if x.shape[dim] < radius:
            raise ValueError(f"a {x.shape[dim]}-pixel map is narrower than the blur radius {radius}")
        before = x.narrow(dim, 0, radius).flip(dim)
        after = x.narrow(dim, x.shape[dim] - radius, radius).flip(dim)
        padded = torch.cat([before, x, after], dim=dim)
        shape = (1, 1, 1, -1) if dim == -1 else (1, 1, -1, 1)
        x = F.conv2d(padded, kernel.view(shape))
    return x


def baseline_map(
    anomaly_map: torch.Tensor,
    size: tuple[int, int],
    sigma: float = BASELINE_SIGMA,
    align_corners: bool = False,
    padding: str = "reflect",
) -> torch.Tensor:
    """Coarse (B,1,h,w) map -> (B,1,H,W): bilinear upsampling, then Gaussian blur (anomalib's kernel
    and its ``reflect`` border, or ``symmetric_blur``)."""
    upsampled = F.interpolate(anomaly_map.float(), size=size, mode="bilinear", align_corners=align_corners)
    if sigma <= 0:
        return upsampled
    if padding == "symmetric":
        return symmetric_blur(upsampled, sigma)
    kernel = 2 * int(4.0 * sigma + 0.5) + 1
    blur = GaussianBlur2d(sigma=(sigma, sigma), channels=1, kernel_size=(kernel, kernel)).to(upsampled.device)
    return blur(upsampled)


def base_map(output: DetectorOutput, size: tuple[int, int]) -> torch.Tensor:
    """The detector's own pixel map: ``baseline_map`` with the detector's sigma and corner alignment."""
    return baseline_map(
        output.anomaly_map, size, output.baseline_sigma, output.align_corners, output.blur_padding
    )


class Refiner(nn.Module):
    """Turns a detector's coarse output into a pixel-level map at the images' resolution.

    The run and the curricula talk to a refiner only through the members declared here.
    """

    #: True when the refiner has weights that a curriculum must train first (see ``TrainableRefiner``).
    trainable: bool = False

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

    def start_training(self) -> None: ...
