"""Reader of VisA as it ships: `split_csv/1cls.csv` over `<category>/Data/{Images,Masks}/...`."""

from __future__ import annotations

import csv
from pathlib import Path

from anorefine.data.layouts import VISA_LAYOUTS
from anorefine.data.records import ImageRecord
from anorefine.errors import DataError

VISA_CATEGORIES: tuple[str, ...] = tuple(VISA_LAYOUTS)

SPLIT_CSV = Path("split_csv") / "1cls.csv"
CSV_COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}


def list_visa_categories(root: Path) -> list[str]:
    """Official VisA categories that have a folder under `root`, in official order."""
    return [c for c in VISA_CATEGORIES if (root / c).is_dir()]


def _record(root: Path, csv_path: Path, line: int, row: dict[str, str]) -> ImageRecord:
    """Turn one CSV row into a record, checking that its files exist."""
    where = f"VisA split file {csv_path} line {line}"
    if row["label"] not in LABELS:
        raise DataError(f"{where}: label '{row['label']}' is not one of {sorted(LABELS)}")
    label = LABELS[row["label"]]
    image = root / row["image"]
    if not image.is_file():
        raise DataError(f"{where}: image {image} does not exist; re-extract VisA into {root}")
    mask = None
    if label == 1:
        if not row["mask"]:
            raise DataError(f"{where}: anomalous image {image} has an empty mask column")
        mask = root / row["mask"]
        if not mask.is_file():
            raise DataError(
                f"{where}: anomalous image {image} has no mask: expected {mask}; re-extract VisA into {root}"
            )
    return ImageRecord(image, mask, label, "bad" if label else "good", row["object"])


def read_visa_split(root: Path, category: str, split: str) -> list[ImageRecord]:
    """Records of one split of one VisA category per the 1-class CSV, sorted by image path."""
    csv_path = root / SPLIT_CSV
    if not csv_path.is_file():
        raise DataError(
            f"VisA split file {csv_path} does not exist: VisA_20220922.tar ships it; "
            f"download with `python scripts/download.py visa --root {root}`"
        )
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"VisA split file {csv_path} lacks columns {missing} of {list(CSV_COLUMNS)}")
        records = [
            _record(root, csv_path, line, row)
            for line, row in enumerate(reader, start=2)
            if row["object"] == category and row["split"] == split
        ]
    if not records:
        raise DataError(f"VisA split file {csv_path} has no rows with object={category}, split={split}")
    return sorted(records, key=lambda r: str(r.image_path))
