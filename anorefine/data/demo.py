"""Offline demo dataset: scikit-image texture photographs with painted defects, in MVTec layout."""

from __future__ import annotations

from pathlib import Path

from anorefine.data.defects import DEFECT_TYPES
from anorefine.data.generated import MARKER, ensure_texture_dataset
from anorefine.data.textures import PHOTO_TEXTURES

__all__ = ["DEMO_CATEGORIES", "MARKER", "ensure_demo_dataset"]

DEMO_CATEGORIES: tuple[str, ...] = PHOTO_TEXTURES
GENERATOR_VERSION = 1
N_TRAIN, N_TEST_GOOD, N_PER_DEFECT = 60, 20, 8


def ensure_demo_dataset(root: Path, seed: int = 0) -> Path:
    """Generate the demo dataset into ``root`` unless a complete one with this seed is there; return
    root. A demo of another seed or generator version is replaced (``ensure_generated``)."""
    counts = (N_TRAIN, N_TEST_GOOD, N_PER_DEFECT)
    return ensure_texture_dataset(
        root, "anorefine.data.demo", GENERATOR_VERSION, seed, DEMO_CATEGORIES, counts, DEFECT_TYPES
    )
