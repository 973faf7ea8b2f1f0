"""Builders of tiny dataset folders in the exact native layouts of MVTec AD, VisA, MVTec AD 2, MVTec LOCO
AD, BTAD, MPDD (MVTec's) and Real-IAD.

Every image is a flat colour whose grey level encodes a per-category code, and the mask of a
defective image covers the top `mask_rows(code)` rows, so a test can check that the mask read
for an image is that image's mask.
"""

from __future__ import annotations

import csv
import json
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


def loco_cols(code: int) -> int:
    """Columns (from the left) that the second LOCO mask file of the image with `code` covers."""
    return 1 + code


#: The defect id the second LOCO mask file marks its pixels with (LOCO masks are not all 0/255).
LOCO_SECOND_VALUE = 7


def _loco_second_mask(code: int) -> np.ndarray:
    mask = np.zeros(SIZE, np.uint8)
    mask[:, : loco_cols(code)] = LOCO_SECOND_VALUE
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


def make_folder(root: Path) -> Path:
    """The MVTec layout of ``make_mvtec`` plus two normal ``validation/good`` images per category."""
    make_mvtec(root)
    for category in ("bottle", "grid"):
        _plain_images(root / category, (("validation/good", 2),), code=20)
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


def _plain_images(category: Path, folders: tuple[tuple[str, int], ...], code: int, stem: str = "") -> int:
    """``count`` RGB images ``<i:03d><stem>.png`` per folder from successive codes; returns the next code."""
    for folder, count in folders:
        for i in range(count):
            _save(category / folder / f"{i:03d}{stem}.png", _image(code, gray=False))
            code += 1
    return code


def make_mvtec_ad2(root: Path, *, categories: tuple[str, ...] = ("can", "walnuts")) -> Path:
    """MVTec AD 2: train/validation good, test_public good/bad with ground_truth/bad/<stem>_mask.png,
    and the unlabeled test_private (3 images) and test_private_mixed (2 images)."""
    for category in categories:
        cat, code = root / category, 0
        code = _plain_images(
            cat, (("train/good", 3), ("validation/good", 2), ("test_public/good", 2)), code, "_regular"
        )
        for i in range(2):
            _save(cat / "test_public" / "bad" / f"{i:03d}_regular.png", _image(code, gray=False))
            _save(cat / "test_public" / "ground_truth" / "bad" / f"{i:03d}_regular_mask.png", _mask(code))
            code += 1
        code = _plain_images(cat, (("test_private", 3), ("test_private_mixed", 2)), code, "_regular")
    return root


def make_loco(root: Path, *, categories: tuple[str, ...] = ("breakfast_box", "pushpins")) -> Path:
    """MVTec LOCO AD: train/validation good, test good / logical_anomalies (2) / structural_anomalies (1);
    each anomaly's ground_truth/<type>/<stem>/ holds 000.png (top rows, 255) and 001.png (left columns,
    ``LOCO_SECOND_VALUE``)."""
    for category in categories:
        cat, code = root / category, 0
        code = _plain_images(cat, (("train/good", 3), ("validation/good", 2), ("test/good", 2)), code)
        for kind, count in (("logical_anomalies", 2), ("structural_anomalies", 1)):
            for i in range(count):
                _save(cat / "test" / kind / f"{i:03d}.png", _image(code, gray=False))
                _save(cat / "ground_truth" / kind / f"{i:03d}" / "000.png", _mask(code))
                _save(cat / "ground_truth" / kind / f"{i:03d}" / "001.png", _loco_second_mask(code))
                code += 1
    return root


def make_btad(root: Path) -> Path:
    """BTAD as btad.zip ships it: category 01 has .bmp images with .png masks, 02 .png images and masks;
    train/ok 3, test/ok 2, test/ko 2 with ground_truth/ko/<stem>.<suffix>."""
    for category, suffix in (("01", ".bmp"), ("02", ".png")):
        cat, code = root / category, 0
        for folder, count in (("train/ok", 3), ("test/ok", 2)):
            for i in range(count):
                _save(cat / folder / f"{i:04d}{suffix}", _image(code, gray=False))
                code += 1
        for i in range(2):
            _save(cat / "test" / "ko" / f"{i:04d}{suffix}", _image(code, gray=False))
            _save(cat / "ground_truth" / "ko" / f"{i:04d}.png", _mask(code))
            code += 1
    return root


def make_mpdd(root: Path) -> Path:
    """MPDD: the MVTec layout with two of MPDD's categories."""
    return make_mvtec(root, categories=("bracket_black", "tubes"), defects=("hole", "scratches"))


#: Real-IAD fixture: (split, anomaly class, sample number, views that show the defect) per sample.
REALIAD_SAMPLES = (
    ("train", "OK", 1, ()),
    ("train", "OK", 2, ()),
    ("test", "OK", 3, ()),
    ("test", "AK", 4, ("C1", "C2")),
    ("test", "QS", 5, ("C3",)),
)
REALIAD_VIEW_NAMES = ("C1", "C2", "C3", "C4", "C5")


def make_realiad(
    root: Path, *, categories: tuple[str, ...] = ("audiojack", "pcb"), variant: str = "realiad_jsons"
) -> Path:
    """Real-IAD: realiad_1024/<cat>/{OK/S<n>, NG/<class>/S<n>}/ with five views per sample and
    realiad_jsons/<variant>/<cat>.json; a defective sample's views that do not show its defect are
    listed as OK without a mask (an image is anomalous where its view shows the defect)."""
    for category in categories:
        cat, code = root / "realiad_1024" / category, 0
        split_items: dict[str, list[dict[str, object]]] = {"train": [], "test": []}
        for split, anomaly, number, shown in REALIAD_SAMPLES:
            folder = f"OK/S{number:04d}" if anomaly == "OK" else f"NG/{anomaly}/S{number:04d}"
            state = "OK" if anomaly == "OK" else f"NG_{anomaly}"
            for view in REALIAD_VIEW_NAMES:
                stem = f"{category}_{number:04d}_{state}_{view}_20231101120000"
                _save(cat / folder / f"{stem}.jpg", _image(code, gray=False))
                mask = None
                if view in shown:
                    mask = f"{folder}/{stem}_mask.png"
                    _save(cat / mask, _mask(code))
                item = {
                    "category": category,
                    "anomaly_class": anomaly if view in shown else "OK",
                    "image_path": f"{folder}/{stem}.jpg",
                    "mask_path": mask,
                }
                split_items[split].append(item)
                code += 1
        jsons = root / "realiad_jsons" / variant
        jsons.mkdir(parents=True, exist_ok=True)
        meta = {"prefix": "", "normal_class": "OK"}
        (jsons / f"{category}.json").write_text(json.dumps({"meta": meta, **split_items}))
    return root
