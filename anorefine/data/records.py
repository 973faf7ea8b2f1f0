"""The record type every dataset reader returns: one image with its label and mask path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from anorefine.errors import DataError

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
#: The label of an image whose ground truth is not published (MVTec AD 2's private test splits).
UNLABELED = -1


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split.

    ``label``: 1 anomalous, 0 normal, ``UNLABELED`` (-1) when the dataset publishes none (never score
    such records with metrics: ``require_labeled``). ``mask_path`` is None for good images, and for
    defective images of a folder dataset that ships no ground_truth/ (image-level labels only); a
    directory stands for the union of the mask files in it (MVTec LOCO AD: one file per defect).
    ``sample_id`` names the physical sample a view belongs to (Real-IAD: five camera views each), None
    for single-view datasets.
    """

    image_path: Path
    mask_path: Path | None
    label: int
    defect_type: str
    category: str
    sample_id: str | None = None


def is_labeled(record: ImageRecord) -> bool:
    """True when the record's label is known (0 or 1), not ``UNLABELED``."""
    return record.label != UNLABELED


def require_labeled(records: Sequence[ImageRecord]) -> None:
    """Fail in one line when any record is unlabeled: metrics would otherwise need a label to assume."""
    unlabeled = [r for r in records if not is_labeled(r)]
    if unlabeled:
        raise DataError(
            f"{len(unlabeled)} of {len(records)} images of category {unlabeled[0].category!r} are unlabeled "
            f"(e.g. {unlabeled[0].image_path}): metrics need a labeled split; score unlabeled images with "
            "predict.py (docs/inspection.md)"
        )


def has_ground_truth(records: list[ImageRecord]) -> bool:
    """True when every defective record has a mask, so pixel metrics can be computed."""
    return all(r.mask_path is not None for r in records if r.label == 1)


def is_image_file(path: Path) -> bool:
    """True for a regular file whose suffix is a known image format (case-insensitive)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
