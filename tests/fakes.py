"""Contract-complete stand-ins for a detector and its normal images, shared by the tests (no test module
imports another)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from anorefine.detectors.base import Detector, DetectorOutput

#: The CLIP detectors' published backbones: (overrides, architecture, open_clip pretrained tag).
PUBLISHED_CLIPS = [
    (["model=winclip"], "ViT-B-16-plus-240", "laion400m_e31"),
    (["model=anomalyclip"], "ViT-L-14-336", "openai"),
    (["model=musc", "model.family=open_clip", "model.backbone=ViT-L-14-336"], "ViT-L-14-336", "openai"),
]


class FakeDetector(Detector):
    """A contract-complete detector in microseconds: the map is how far a cell's colour is from grey.

    Features: the cell's mean colour and the colour spread, projected to ``channels`` with a fixed
    random matrix, so they are deterministic and differ between normal and painted cells.
    """

    def __init__(self, stride: int = 8, channels: int = 12) -> None:
        super().__init__()
        self.stride, self.receptive_field = stride, 3 * stride
        self.projection = torch.nn.Parameter(
            torch.randn(channels, 6, generator=torch.Generator().manual_seed(0))
        )
        self.projection.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        grid = int(images.shape[-1]) // self.stride  # an int also while torch.onnx traces
        mean = F.adaptive_avg_pool2d(images, grid)
        spread = F.adaptive_avg_pool2d(images**2, grid) - mean**2
        stats = torch.cat([mean, spread], 1)
        anomaly_map = (mean - 0.5).abs().sum(1, keepdim=True) + spread.sum(1, keepdim=True)
        features = torch.einsum("oc,bchw->bohw", self.projection, stats)
        return DetectorOutput(
            anomaly_map, anomaly_map.flatten(1).amax(1), features, self.stride, self.receptive_field
        )


def fake_output(batch: int, size: int, stride: int, channels: int = 16, seed: int = 0) -> DetectorOutput:
    generator = torch.Generator().manual_seed(seed)
    grid = round(size / stride)
    anomaly_map = 10 + 3 * torch.rand(batch, 1, grid, grid, generator=generator)
    features = torch.randn(batch, channels, grid, grid, generator=generator)
    return DetectorOutput(anomaly_map, anomaly_map.flatten(1).amax(1), features, stride, 3 * stride)


class Normals(Dataset):
    """A few smooth random images: enough normal data for every fit."""

    def __init__(self, size: int, count: int = 4) -> None:
        generator = torch.Generator().manual_seed(7)
        noise = torch.rand(count, 3, size // 8, size // 8, generator=generator)
        self.images = F.interpolate(noise, size=(size, size), mode="bilinear")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index]}
