"""The record type every dataset reader returns: one image with its label and mask path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: The dataset kinds a run can read (``dataset.name``).
DATASET_KINDS: tuple[str, ...] = ("mvtec", "visa", "folder", "demo", "transfer")


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
