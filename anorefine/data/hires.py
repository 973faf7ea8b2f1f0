"""A high-resolution stand-in (docs/high_resolution.md): large procedural textures in the MVTec layout
with defects far smaller than anything the demo draws, painted by this package's own painters.

Each category is one procedural texture drawn at twice the image side; every image is a random
``size``-pixel window of it (flips, a quarter turn, brightness/contrast jitter and sensor noise, as
the demo's images). A defect is painted inside a random ``patch``-pixel square of a fresh normal image
at the painters' usual area (0.1-3 % of the square), so at 2048 pixels and a 256-pixel square it covers
0.0016-0.047 % of the image: the fine defects a 256² resize loses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anorefine.data.generated import ensure_generated, save_png

GENERATOR_VERSION = 2
HIRES_KINDS: tuple[str, ...] = ("scratch", "hole", "stain", "crack")


def window(texture: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A jittered ``size``² uint8 window of a float (H,W,3) texture in [0, 1]."""
    y, x = rng.integers(0, np.array(texture.shape[:2]) - size + 1)
    crop = np.rot90(texture[y : y + size, x : x + size], int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    pixels = 255.0 * crop.astype(np.float32)
    mean = pixels.mean()
    contrast, brightness = rng.uniform(0.9, 1.1), 255.0 * rng.uniform(-0.04, 0.04)
    pixels = (pixels - mean) * np.float32(contrast) + np.float32(mean + brightness)
    pixels += 2.55 * rng.standard_normal(pixels.shape, dtype=np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def paint_small(
    image: np.ndarray, kind: str, patch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``kind`` painted inside a random ``patch``² square of ``image``: (image, full-size bool mask)."""
    from anorefine.data.defects import paint_defect  # torch (Perlin noise), only when generating

    y, x = rng.integers(0, np.array(image.shape[:2]) - patch + 1)
    painted, small = paint_defect(image[y : y + patch, x : x + patch], kind, rng)
    out, mask = image.copy(), np.zeros(image.shape[:2], dtype=bool)
    out[y : y + patch, x : x + patch] = painted
    mask[y : y + patch, x : x + patch] = small
    return out, mask


def ensure_hires_standin(
    root: Path,
    seed: int = 0,
    size: int = 2048,
    patch: int = 256,
    counts: tuple[int, int, int, int] = (6, 4, 4, 2),
    textures: Sequence[str] = ("carpet",),
    kinds: Sequence[str] = HIRES_KINDS,
) -> Path:
    """Generate the stand-in into ``root`` (MVTec layout, one category per texture) unless the same one
    is there: ``counts`` = (train, validation good, test good, per kind) images of ``size``² pixels."""
    from anorefine.data.textures import PROCEDURAL_TEXTURES

    marker = {
        "generator": "anorefine.data.hires", "version": GENERATOR_VERSION, "seed": seed, "size": size,
        "patch": patch, "counts": list(counts), "textures": list(textures), "kinds": list(kinds),
    }  # fmt: skip

    def write(folder: Path) -> None:
        for index, name in enumerate(textures):
            texture = PROCEDURAL_TEXTURES[name](np.random.default_rng([seed, index]), 2 * size)
            dest = folder / name
            n_train, n_validation, n_good, n_per_kind = counts
            normals = (("train", n_train, 0), ("validation", n_validation, 1), ("test", n_good, 2))
            for split, count, stream in normals:
                for i in range(count):
                    rng = np.random.default_rng([seed, index, stream, i])
                    save_png(window(texture, size, rng), dest / split / "good" / f"{i:03d}.png")
            for stream, kind in enumerate(kinds, start=3):
                for i in range(n_per_kind):
                    rng = np.random.default_rng([seed, index, stream, i])
                    image, mask = paint_small(window(texture, size, rng), kind, patch, rng)
                    save_png(image, dest / "test" / kind / f"{i:03d}.png")
                    save_png(mask.astype(np.uint8) * 255, dest / "ground_truth" / kind / f"{i:03d}_mask.png")

    return ensure_generated(Path(root), marker, write)
