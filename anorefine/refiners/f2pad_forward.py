"""F2PAD's forward model: how a pixel-level anomaly map becomes a detector's feature-level map.

Each feature cell's score is modelled as the receptive-field-weighted mean of the pixel-level
anomaly under it: a normalised separable kernel (Gaussian or box) of side ``kernel_size`` centred on the
cell, cells ``stride`` pixels apart. Shifted views (the image translated by a sub-stride offset
before the detector sees it) are modelled by translating the pixel map the same way first.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

#: Receptive-field kernel profiles.
Kernel = Literal["gaussian", "box"]


def shift(maps: torch.Tensor, offset: tuple[int, int], mode: str = "replicate") -> torch.Tensor:
    """(B,C,H,W) -> same shape with ``out[..., y, x] = maps[..., y + dy, x + dx]``, borders padded."""
    dy, dx = offset
    if dy == 0 and dx == 0:
        return maps
    height, width = maps.shape[-2:]
    padded = F.pad(maps, (max(-dx, 0), max(dx, 0), max(-dy, 0), max(dy, 0)), mode=mode)
    top, left = max(dy, 0), max(dx, 0)
    return padded[..., top : top + height, left : left + width]


def receptive_field_profile(
    kernel_size: int, kind: Kernel = "gaussian", sigma_ratio: float = 0.25
) -> torch.Tensor:
    """(k,) weights summing to 1 of a separable kernel: Gaussian with sigma = sigma_ratio * k, or a box."""
    if kind not in get_args(Kernel):
        raise ValueError(f"kernel={kind!r} is unknown: use one of {get_args(Kernel)}")
    if kind == "box" or kernel_size == 1:
        profile = torch.ones(kernel_size)
    else:
        coords = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
        profile = torch.exp(-0.5 * (coords / (sigma_ratio * kernel_size)) ** 2)
    return profile / profile.sum()


class ReceptiveFieldOperator:
    """Linear map from a (B,1,H,W) pixel map to the (B,1,h,w) grid of a detector.

    Cell ``i`` is centred on pixel ``stride * i + (stride - 1) / 2`` (the centre of its stride
    block); its kernel is enlarged by one pixel when needed so that it is centred exactly there.
    With ``stride=1`` and ``kernel_size=1`` the operator is the identity.
    """

    def __init__(
        self,
        stride: int,
        kernel_size: int,
        kind: Kernel = "gaussian",
        sigma_ratio: float = 0.25,
        padding_mode: str = "replicate",
    ) -> None:
        if stride < 1 or kernel_size < 1:
            raise ValueError(f"stride ({stride}) and kernel_size ({kernel_size}) must be positive")
        self.stride = int(stride)
        self.kernel_size = int(kernel_size) + (int(kernel_size) - self.stride) % 2
        self.padding_mode = padding_mode
        self.profile = receptive_field_profile(self.kernel_size, kind, sigma_ratio)

    def __call__(
        self, pixel_map: torch.Tensor, grid: tuple[int, int], offset: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        """Scores of a (h, w) ``grid`` of cells of ``pixel_map`` seen through a view shifted by ``offset``."""
        pixel_map = shift(pixel_map, offset)
        margin = (self.kernel_size - self.stride) // 2
        pads = []
        for cells, size in zip(reversed(grid), reversed(pixel_map.shape[-2:]), strict=True):
            pads += [margin, self.stride * (cells - 1) + self.kernel_size - size - margin]
        cropped = pixel_map[
            ..., : pixel_map.shape[-2] + min(pads[3], 0), : pixel_map.shape[-1] + min(pads[1], 0)
        ]
        padded = F.pad(cropped, [max(p, 0) for p in pads], mode=self.padding_mode)
        profile = self.profile.to(device=pixel_map.device, dtype=pixel_map.dtype)
        rows = F.conv2d(padded, profile.view(1, 1, -1, 1), stride=(self.stride, 1))
        return F.conv2d(rows, profile.view(1, 1, 1, -1), stride=(1, self.stride))
