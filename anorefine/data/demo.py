"""Offline demo dataset: scikit-image texture photographs with painted defects, in MVTec layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anorefine.data.defects import DEFECT_TYPES
from anorefine.data.generated import MARKER, ensure_generated, write_category
from anorefine.data.textures import PHOTO_TEXTURES, load_texture

__all__ = ["DEMO_CATEGORIES", "MARKER", "ensure_demo_dataset"]

DEMO_CATEGORIES: tuple[str, ...] = PHOTO_TEXTURES
GENERATOR_VERSION = 1
N_TRAIN, N_TEST_GOOD, N_PER_DEFECT = 60, 20, 8


def ensure_demo_dataset(root: Path, seed: int = 0) -> Path:
    """Generate the demo dataset into ``root`` unless a complete one with this seed is there; return
    root. A demo of another seed or generator version is replaced (``ensure_generated``)."""

    def write(folder: Path) -> None:
        for index, category in enumerate(DEMO_CATEGORIES):
            texture, tint = load_texture(category, seed)

            def rng(stream: int, i: int, index: int = index) -> np.random.Generator:
                return np.random.default_rng([seed, index, stream, i])

            counts = (N_TRAIN, N_TEST_GOOD, N_PER_DEFECT)
            write_category(folder / category, texture, tint, rng, counts, DEFECT_TYPES)

    marker = {"generator": "anorefine.data.demo", "version": GENERATOR_VERSION, "seed": seed}
    return ensure_generated(root, marker, write)
