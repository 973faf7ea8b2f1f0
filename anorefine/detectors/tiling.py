"""High resolution by tiling (``eval.tiling``): any detector scores overlapping tiles of a large image at
native detail, and the tiles' maps and features are stitched into one map on the image's cell grid.

The image (B,3,H,W) is cut into ``tile``-pixel squares ``tile - overlap`` pixels apart (the last one on
each axis flush with the border), fed to the detector ``batch`` tiles at a time without resizing, and
each tile's patch map and features are placed on the whole image's grid (stride = the detector's).
Where tiles overlap, their cells are blended with a window: ``hann`` (sin², never zero, so the tiles
fade into each other) or ``crop`` (each cell from the tile whose centre is nearest: equal to scoring
the whole image wherever the detector's receptive field fits inside the overlap). The image score is
the highest tile score. Memory: ``batch`` tiles at a time, plus the stitched grid (features included);
the refiners then work on the stitched map at the image's resolution (docs/high_resolution.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from anorefine.data.records import TilingWindow as Window
from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.errors import AnorefineError


@dataclass(frozen=True)
class Tiling:
    """``eval.tiling``: tile side and overlap in pixels, the blend window, tiles per detector call."""

    tile: int
    overlap: int = 32
    window: Window = "hann"
    batch: int = 16

    def check(self, stride: int) -> None:
        """Tiles that fit the detector's grid: side and overlap multiples of its ``stride``, overlap
        below the side (one line naming the setting otherwise)."""
        if self.tile <= 0 or self.batch <= 0:
            raise AnorefineError(f"eval.tiling.tile={self.tile} and batch={self.batch} must be positive")
        if not 0 <= self.overlap < self.tile:
            raise AnorefineError(
                f"eval.tiling.overlap={self.overlap} must lie in [0, tile={self.tile}): tiles must advance"
            )
        for name, value in (("tile", self.tile), ("overlap", self.overlap)):
            if value % stride:
                raise AnorefineError(
                    f"eval.tiling.{name}={value} is not a multiple of the detector's stride {stride}: "
                    f"use a multiple of {stride} so tiles land on its cell grid"
                )

    def starts(self, length: int) -> list[int]:
        """Pixel offsets of the tiles along an axis of ``length`` pixels (one tile when it fits)."""
        if length <= self.tile:
            return [0]
        step = self.tile - self.overlap
        count = math.ceil((length - self.tile) / step) + 1
        return [min(index * step, length - self.tile) for index in range(count)]


def axis_weights(starts: list[int], cells: int, length: int, window: Window) -> torch.Tensor:
    """(tiles, cells) blend weight of each tile's cells along one axis of ``length`` grid cells."""
    weights = torch.zeros(len(starts), length)
    if window == "hann":
        ramp = torch.sin(math.pi * (torch.arange(cells) + 0.5) / cells) ** 2
        for index, start in enumerate(starts):
            weights[index, start : start + cells] = ramp
        return weights
    centres = torch.tensor([start + cells / 2 for start in starts])
    positions = torch.arange(length) + 0.5
    covered = torch.stack([(positions >= s) & (positions < s + cells) for s in starts])
    distance = (positions[None] - centres[:, None]).abs().masked_fill(~covered, math.inf)
    nearest = distance.argmin(0)  # ties: the first tile
    weights[nearest, torch.arange(length)] = 1.0
    return weights


class TiledDetector(Detector):
    """``detector`` applied tile by tile (``tiling``) and stitched on the whole image's grid."""

    def __init__(self, detector: Detector, tiling: Tiling) -> None:
        super().__init__()
        if detector.transductive:
            raise AnorefineError(
                "eval.tiling is not available for a detector that scores images against each other "
                "(MuSc): unset eval.tiling.tile"
            )
        tiling.check(detector.stride)
        self.inner = detector
        self.tiling = tiling
        self.tile_side = tiling.tile
        self.requires_fit = detector.requires_fit
        self.smoke_only = detector.smoke_only
        self.stride = detector.stride
        self.receptive_field = detector.receptive_field
        self.baseline = detector.baseline

    def setup_category(self, category: str) -> None:
        self.inner.setup_category(category)

    def tiles(self, images: torch.Tensor) -> tuple[torch.Tensor, list[int], list[int]]:
        """(B·T,3,tile,tile) tiles of ``images`` in row-major order per image, and the row and column
        pixel offsets."""
        rows, cols = self.tiling.starts(images.shape[-2]), self.tiling.starts(images.shape[-1])
        side = min(self.tiling.tile, images.shape[-2]), min(self.tiling.tile, images.shape[-1])
        crops = [images[:, :, r : r + side[0], c : c + side[1]] for r in rows for c in cols]
        return torch.stack(crops, 1).flatten(0, 1), rows, cols

    def fit(self, normal_loader: DataLoader) -> None:
        """Fit the detector on the tiles of the normal images (``batch`` tiles per batch)."""
        tiles = DataLoader(TileStream(self, normal_loader), batch_size=None)
        self.inner.fit(tiles)

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        tiles, rows, cols = self.tiles(images)
        outputs = [self.inner(chunk) for chunk in tiles.split(self.tiling.batch)]
        maps = torch.cat([o.anomaly_map for o in outputs])
        features = torch.cat([o.features for o in outputs])
        scores = torch.cat([o.image_score for o in outputs]).view(len(images), -1)
        stitched = self.stitch(torch.cat([maps, features], 1), rows, cols, images.shape[-2:], len(images))
        return self.output(stitched[:, :1], scores.amax(1), stitched[:, 1:])

    def stitch(
        self, cells: torch.Tensor, rows: list[int], cols: list[int], size: torch.Size, batch: int
    ) -> torch.Tensor:
        """(B·T,C,h,w) tile grids -> (B,C,H/stride,W/stride), blended with the window."""
        stride = self.stride
        grid_h, grid_w = size[0] // stride, size[1] // stride
        tile_h, tile_w = cells.shape[-2:]
        if (tile_h * stride, tile_w * stride) != (
            min(self.tiling.tile, size[0]),
            min(self.tiling.tile, size[1]),
        ):
            raise AnorefineError(
                f"eval.tiling: the detector maps a {self.tiling.tile}-pixel tile to {tile_h}x{tile_w} cells, "
                f"not tile/stride={self.tiling.tile // stride}: tiling needs a detector whose grid is the "
                "input size over its stride"
            )
        row_starts, col_starts = [r // stride for r in rows], [c // stride for c in cols]
        row_w = axis_weights(row_starts, tile_h, grid_h, self.tiling.window).to(cells)
        col_w = axis_weights(col_starts, tile_w, grid_w, self.tiling.window).to(cells)
        per_image = cells.view(batch, len(rows) * len(cols), *cells.shape[1:])
        out = cells.new_zeros(batch, cells.shape[1], grid_h, grid_w)
        norm = cells.new_zeros(grid_h, grid_w)
        for i, r in enumerate(row_starts):
            for j, c in enumerate(col_starts):
                weight = row_w[i, r : r + tile_h, None] * col_w[j, None, c : c + tile_w]
                out[:, :, r : r + tile_h, c : c + tile_w] += per_image[:, i * len(col_starts) + j] * weight
                norm[r : r + tile_h, c : c + tile_w] += weight
        return out / norm.clamp_min(torch.finfo(cells.dtype).tiny)


class TileStream(IterableDataset):
    """The tiles of every image ``loader`` yields, ``tiling.batch`` at a time, as ``{"image": ...}``."""

    def __init__(self, detector: TiledDetector, loader: DataLoader) -> None:
        self.detector = detector
        self.loader = loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            tiles, _, _ = self.detector.tiles(batch["image"])
            for chunk in tiles.split(self.detector.tiling.batch):
                yield {"image": chunk}
