"""Builders of tiny dataset folders in the exact native layouts of MVTec AD and VisA.

Every image is a flat colour whose grey level encodes a per-category code, and the mask of a
defective image covers the top `mask_rows(code)` rows, so a test can check that the mask read
for an image is that image's mask.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (40, 48)  # (H, W) of every fixture image


def pixel_value(code: int) -> int:
    """Grey level of the image with `code`."""
    return 16 + 8 * code


def code_from_value(value: float) -> int:
    """Inverse of pixel_value for a value in [0, 1]."""
    return round((value * 255 - 16) / 8)


def mask_rows(code: int) -> int:
    """Rows (from the top) that the mask of the image with `code` covers."""
    return 2 + 2 * code


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _image(code: int, gray: bool) -> np.ndarray:
    shape = SIZE if gray else (*SIZE, 3)
    return np.full(shape, pixel_value(code), np.uint8)


def _mask(code: int, on: int = 255) -> np.ndarray:
    mask = np.zeros(SIZE, np.uint8)
    mask[: mask_rows(code)] = on
    return mask


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def make_mvtec(
    root: Path,
    *,
    categories: tuple[str, ...] = ("bottle", "grid"),
    defects: tuple[str, ...] = ("broken", "crack"),
    n_train: int = 3,
    n_good: int = 2,
    n_defect: int = 2,
    ground_truth: bool = True,
) -> Path:
    """MVTec layout; "grid" is greyscale as in MVTec AD; an unofficial folder and stray files are added."""
    for category in categories:
        cat, gray, code = root / category, category == "grid", 0
        for i in range(n_train):
            _save(cat / "train" / "good" / f"{i:03d}.png", _image(code, gray))
            code += 1
        for i in range(n_good):
            _save(cat / "test" / "good" / f"{i:03d}.png", _image(code, gray))
            code += 1
        for defect in defects:
            for i in range(n_defect):
                _save(cat / "test" / defect / f"{i:03d}.png", _image(code, gray))
                if ground_truth:
                    _save(cat / "ground_truth" / defect / f"{i:03d}_mask.png", _mask(code))
                code += 1
        (cat / "train" / "good" / "Thumbs.db").write_bytes(b"not an image")
    (root / "license.txt").write_text("fixture")
    (root / "notes" / "test").mkdir(parents=True)  # not an official category
    return root


def make_visa(root: Path, *, categories: tuple[str, ...] = ("candle", "pcb1"), n_train: int = 3) -> Path:
    """VisA as shipped: `split_csv/1cls.csv` over `<cat>/Data/{Images,Masks}`; masks 255 or 1."""
    rows = [("object", "split", "label", "image", "mask")]
    for index, category in enumerate(categories):
        data, on = root / category / "Data", 255 if index == 0 else 1
        for code in range(n_train + 2):
            image = _save(data / "Images" / "Normal" / f"{code:04d}.JPG", _image(code, gray=False))
            split = "train" if code < n_train else "test"
            rows.append((category, split, "normal", _rel(image, root), ""))
        for code in range(n_train + 2, n_train + 4):
            image = _save(data / "Images" / "Anomaly" / f"{code:03d}.JPG", _image(code, gray=False))
            mask = _save(data / "Masks" / "Anomaly" / f"{code:03d}.png", _mask(code, on))
            rows.append((category, "test", "anomaly", _rel(image, root), _rel(mask, root)))
        (root / category / "image_anno.csv").write_text("image,label,mask\n")
    (root / "split_csv").mkdir(parents=True)
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root
