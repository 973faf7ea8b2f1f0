"""Anomaly maps as files, at each image's own size: float32 TIFF maps, binary PNG masks, PNG overlays.

A map is upsampled bilinearly from the model's input size to the image's (H0, W0) and stored as a
single-channel float32 TIFF (PIL mode ``F``): the exact values, readable by any TIFF reader. Masks are
``map > threshold`` as 0/255 PNGs; overlays blend the image with the map coloured from ``floor``
(dark, transparent) to ``threshold`` (bright, opaque) and outline the mask in white.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

from anorefine.atomic import write_atomic
from anorefine.data.records import ImageRecord
from anorefine.shapes import spatial_size

#: The colour map of overlays.
OVERLAY_COLORMAP = "inferno"
#: Heat-map opacity at and above the threshold (it falls to 0 at the floor).
OVERLAY_ALPHA = 0.6


def at_size(anomaly_map: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(1, h, w) or (h, w) map -> (H0, W0) float32 array, bilinear (the input size kept as is)."""
    grid = anomaly_map.detach().float().cpu().reshape(1, 1, *anomaly_map.shape[-2:])
    if spatial_size(grid) != tuple(size):
        grid = F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)
    return grid[0, 0].numpy()


def write_map(path: Path, values: np.ndarray) -> None:
    """A float32 TIFF of ``values`` (H0, W0)."""
    write_atomic(path, Image.fromarray(values.astype(np.float32), mode="F").save)


def read_map(path: Path) -> np.ndarray:
    """The (H0, W0) float32 values ``write_map`` stored."""
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.float32)


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A 0/255 PNG of a boolean (H0, W0) mask."""
    write_atomic(path, Image.fromarray(mask.astype(np.uint8) * 255).save)


def overlay(
    image: np.ndarray, values: np.ndarray, mask: np.ndarray, floor: float, threshold: float
) -> np.ndarray:
    """(H0, W0, 3) uint8: ``image`` (float RGB in [0, 1]) under the map, mask outlined in white."""
    level = np.clip((values - floor) / max(threshold - floor, 1e-12), 0.0, 1.0)
    heat = colormaps[OVERLAY_COLORMAP](level)[..., :3]
    alpha = OVERLAY_ALPHA * level[..., None]
    blended = (1 - alpha) * image + alpha * heat
    blended[mask & ~ndimage.binary_erosion(mask, iterations=2)] = 1.0
    return (np.clip(blended, 0.0, 1.0) * 255).round().astype(np.uint8)


def write_overlay(
    path: Path, image: np.ndarray, values: np.ndarray, mask: np.ndarray, floor: float, threshold: float
) -> None:
    """``overlay`` as a PNG."""
    write_atomic(path, Image.fromarray(overlay(image, values, mask, floor, threshold)).save)


class MapSaver:
    """Sink of ``eval.save_maps``: each test image's base and refined maps as
    ``<folder>/<base|refined>/<defect type>/<image stem>.tiff``."""

    def __init__(self, records: list[ImageRecord], folder: Path) -> None:
        self.records, self.folder = records, folder

    def __call__(
        self, batch: dict[str, Any], base: torch.Tensor, refined: torch.Tensor, score: torch.Tensor
    ) -> None:
        for index, size, base_map, refined_map in zip(
            batch["index"].tolist(), batch["original_size"].tolist(), base, refined, strict=True
        ):
            record = self.records[index]
            name = Path(record.defect_type) / f"{record.image_path.stem}.tiff"
            for stage, values in (("base", base_map), ("refined", refined_map)):
                write_map(self.folder / stage / name, at_size(values, tuple(size)))
