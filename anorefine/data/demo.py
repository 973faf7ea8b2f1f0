"""Offline demo dataset: scikit-image texture photographs with painted defects, in MVTec layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anorefine.data.defects import DEFECT_TYPES, paint_defect
from anorefine.data.generated import MARKER, ensure_generated, save_png
from anorefine.data.textures import PHOTO_TEXTURES, load_texture, normal_image

__all__ = ["DEMO_CATEGORIES", "MARKER", "ensure_demo_dataset"]

DEMO_CATEGORIES: tuple[str, ...] = PHOTO_TEXTURES
GENERATOR_VERSION = 1
N_TRAIN, N_TEST_GOOD, N_PER_DEFECT = 60, 20, 8


def _generate_category(dest: Path, index: int, category: str, seed: int) -> None:
    """Write train/good, test/good and the painted defects with their masks for one category."""
    texture, tint = load_texture(category, seed)

    def rng(stream: int, i: int) -> np.random.Generator:
        return np.random.default_rng([seed, index, stream, i])

    for i in range(N_TRAIN):
        save_png(normal_image(texture, tint, rng(0, i)), dest / "train" / "good" / f"{i:03d}.png")
    for i in range(N_TEST_GOOD):
        save_png(normal_image(texture, tint, rng(1, i)), dest / "test" / "good" / f"{i:03d}.png")
    for stream, kind in enumerate(DEFECT_TYPES, start=2):
        for i in range(N_PER_DEFECT):
            r = rng(stream, i)
            image, mask = paint_defect(normal_image(texture, tint, r), kind, r)
            save_png(image, dest / "test" / kind / f"{i:03d}.png")
            save_png(mask.astype(np.uint8) * 255, dest / "ground_truth" / kind / f"{i:03d}_mask.png")


def ensure_demo_dataset(root: Path, seed: int = 0) -> Path:
    """Generate the demo dataset into ``root`` unless a complete one with this seed is there; return
    root. A demo of another seed or generator version is replaced (``ensure_generated``)."""

    def write(folder: Path) -> None:
        for index, category in enumerate(DEMO_CATEGORIES):
            _generate_category(folder / category, index, category, seed)

    marker = {"generator": "anorefine.data.demo", "version": GENERATOR_VERSION, "seed": seed}
    return ensure_generated(root, marker, write)
