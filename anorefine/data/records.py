"""The record type every dataset reader returns: one image with its label and mask path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: How images reach the model's size: torch bilinear with antialias, or PIL bicubic (the CLIP codes).
ImageResize = Literal["bilinear", "bicubic"]
#: How masks reach it: nearest neighbour, or PIL bilinear on the 0/255 mask then kept where > 127.5
#: (AnomalyCLIP: > 0.5), == 255 (MuSc on MVTec AD: only pixels that stay exactly 1) or > 0 (MuSc, VisA).
MaskResize = Literal["nearest", "above_half", "full", "nonzero"]
#: The baseline blur's border: torch ``reflect`` (the edge pixel not repeated; anomalib's GaussianBlur2d)
#: or ``symmetric`` (the edge pixel repeated: scipy.ndimage.gaussian_filter's ``reflect``, as the
#: official AnomalyCLIP code).
BlurPadding = Literal["reflect", "symmetric"]
#: How overlapping tiles blend (``eval.tiling.window``): sin² weights, or each cell from the nearest
#: tile centre (anorefine.detectors.tiling).
TilingWindow = Literal["hann", "crop"]


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split.

    `mask_path` is None for good images, and for defective images of a folder dataset
    that ships no ground_truth/ (image-level labels only).
    """

    image_path: Path
    mask_path: Path | None
    label: int
    defect_type: str
    category: str


def has_ground_truth(records: list[ImageRecord]) -> bool:
    """True when every defective record has a mask, so pixel metrics can be computed."""
    return all(r.mask_path is not None for r in records if r.label == 1)


def is_image_file(path: Path) -> bool:
    """True for a regular file whose suffix is a known image format (case-insensitive)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
