"""F2PAD's forward model: how a pixel-level anomaly map becomes a detector's feature-level map.

Each feature cell's score is modelled as the receptive-field-weighted mean of the pixel-level
anomaly under it: a normalised separable kernel (Gaussian or box) of side ``kernel_size`` centred on the
cell, cells ``stride`` pixels apart. Shifted views (the image translated by a sub-stride offset
before the detector sees it) are modelled by translating the pixel map the same way first.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from anorefine.refiners import separable
from anorefine.shapes import spatial_size

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
    """(k,) float64 weights summing to 1 of a separable kernel: a box, or a Gaussian with
    sigma = sigma_ratio * k."""
    if kind == "box" or kernel_size == 1:
        profile = torch.ones(kernel_size, dtype=torch.float64)
    else:
        coords = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
        profile = torch.exp(-0.5 * (coords / (sigma_ratio * kernel_size)) ** 2)
    return profile / profile.sum()


@lru_cache(maxsize=256)
def pooling_matrix(
    cells: int, length: int, offset: int, stride: int, kernel_size: int, kind: Kernel, sigma_ratio: float
) -> torch.Tensor:
    """(cells, length) float64: cell ``i`` of one axis weighs pixels ``stride * i - margin + t``
    (t < kernel_size) of the axis shifted by ``offset``, both the shift and the window clamped to
    the axis (replicate borders)."""
    margin = (kernel_size - stride) // 2
    starts = stride * torch.arange(cells)[:, None] - margin
    window = (starts + torch.arange(kernel_size)[None]).clamp(0, length - 1)
    sources = (window + offset).clamp(0, length - 1)
    profile = receptive_field_profile(kernel_size, kind, sigma_ratio)
    matrix = torch.zeros(cells, length, dtype=torch.float64)
    outputs = torch.arange(cells)[:, None].expand_as(sources)
    return matrix.index_put_((outputs, sources), profile.expand_as(sources), accumulate=True)


class ReceptiveFieldOperator:
    """Linear map from a (B,1,H,W) pixel map to the (B,1,h,w) grid of a detector.

    Cell ``i`` is centred on pixel ``stride * i + (stride - 1) / 2`` (the centre of its stride
    block); its kernel is enlarged by one pixel when needed so that it is centred exactly there.
    With ``stride=1`` and ``kernel_size=1`` the operator is the identity. It is separable: one
    ``pooling_matrix`` per axis (``matrices``), so F2PAD can fold its upsampling into it.
    """

    def __init__(
        self, stride: int, kernel_size: int, kind: Kernel = "gaussian", sigma_ratio: float = 0.25
    ) -> None:
        if stride < 1 or kernel_size < 1:
            raise ValueError(f"stride ({stride}) and kernel_size ({kernel_size}) must be positive")
        if kind not in get_args(Kernel):
            raise ValueError(f"kernel={kind!r} is unknown: use one of {get_args(Kernel)}")
        self.stride = int(stride)
        self.kernel_size = int(kernel_size) + (int(kernel_size) - self.stride) % 2
        self.kind, self.sigma_ratio = kind, float(sigma_ratio)

    def matrices(
        self, grid: tuple[int, int], size: tuple[int, int], offset: tuple[int, int] = (0, 0)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) float64 matrices of a (h, w) ``grid`` of cells over an (H, W) map, view ``offset``."""
        return tuple(  # type: ignore[return-value]  # two axes: a pair
            pooling_matrix(cells, length, shift_, self.stride, self.kernel_size, self.kind, self.sigma_ratio)
            for cells, length, shift_ in zip(grid, size, offset, strict=True)
        )

    def __call__(
        self, pixel_map: torch.Tensor, grid: tuple[int, int], offset: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        """Scores of a (h, w) ``grid`` of cells of ``pixel_map`` seen through a view shifted by ``offset``."""
        return separable.apply(pixel_map, *self.matrices(grid, spatial_size(pixel_map), offset))
