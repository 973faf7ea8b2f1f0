"""Offline demo dataset: scikit-image texture photographs with painted defects, in MVTec layout."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from anorefine.data.defects import DEFECT_TYPES, paint_defect
from anorefine.errors import DataError

DEMO_CATEGORIES: tuple[str, ...] = ("brick", "grass", "gravel")
GENERATOR_VERSION = 1
MARKER = ".anorefine_demo.json"
IMAGE_SIZE, CROP = 256, 320
N_TRAIN, N_TEST_GOOD, N_PER_DEFECT = 60, 20, 8
_TINTS = {"brick": (1.0, 0.72, 0.58), "grass": (0.72, 1.0, 0.55), "gravel": (0.95, 0.9, 0.8)}


def _good_image(texture: np.ndarray, tint: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 256×256 uint8 RGB crop of `texture` with flips, rotation, brightness/contrast jitter and noise."""
    y, x = rng.integers(0, np.array(texture.shape) - CROP + 1)
    crop = np.rot90(texture[y : y + CROP, x : x + CROP], int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    resized = Image.fromarray(np.ascontiguousarray(crop)).resize(
        (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR
    )
    gray = np.asarray(resized, dtype=np.float32)
    mean = gray.mean()
    contrast, brightness = rng.uniform(0.9, 1.1), 255.0 * rng.uniform(-0.04, 0.04)
    gray = (gray - mean) * np.float32(contrast) + np.float32(mean + brightness)
    gray += 2.55 * rng.standard_normal(gray.shape, dtype=np.float32)
    return np.clip(np.rint(gray[..., None] * tint), 0, 255).astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Pillow writes no timestamp, so the bytes depend on the pixels only; level 1 is fast and small here
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _generate_category(dest: Path, index: int, category: str, seed: int) -> None:
    """Write train/good, test/good and the painted defects with their masks for one category."""
    texture = getattr(skimage.data, category)()
    tint = np.array(_TINTS[category], np.float32)

    def rng(stream: int, i: int) -> np.random.Generator:
        return np.random.default_rng([seed, index, stream, i])

    for i in range(N_TRAIN):
        _save_png(_good_image(texture, tint, rng(0, i)), dest / "train" / "good" / f"{i:03d}.png")
    for i in range(N_TEST_GOOD):
        _save_png(_good_image(texture, tint, rng(1, i)), dest / "test" / "good" / f"{i:03d}.png")
    for stream, kind in enumerate(DEFECT_TYPES, start=2):
        for i in range(N_PER_DEFECT):
            r = rng(stream, i)
            image, mask = paint_defect(_good_image(texture, tint, r), kind, r)
            _save_png(image, dest / "test" / kind / f"{i:03d}.png")
            _save_png(mask.astype(np.uint8) * 255, dest / "ground_truth" / kind / f"{i:03d}_mask.png")


def _marker(seed: int) -> dict[str, object]:
    return {"generator": "anorefine.data.demo", "version": GENERATOR_VERSION, "seed": seed}


def _read_marker(root: Path) -> dict[str, object] | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def ensure_demo_dataset(root: Path, seed: int = 0) -> Path:
    """Generate the demo dataset into `root` unless a complete one with this seed is there; return root.

    Generation writes into a temporary sibling folder, adds the completion marker last and
    renames it into place, so an interrupted run never leaves a dataset that looks complete.
    A demo of another seed or generator version is replaced; any other non-empty folder is refused.
    """
    root = Path(root)
    found = _read_marker(root)
    if found == _marker(seed):
        return root
    if found is None and root.is_dir() and any(root.iterdir()):
        raise DataError(
            f"{root} is not empty and is not an anorefine demo dataset (no {MARKER}): "
            f"set dataset.root to a new or empty folder for the demo"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        for index, category in enumerate(DEMO_CATEGORIES):
            _generate_category(tmp / category, index, category, seed)
        (tmp / MARKER).write_text(json.dumps(_marker(seed)))
        if root.is_dir():
            shutil.rmtree(root)  # empty, or a demo of another seed/version
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
