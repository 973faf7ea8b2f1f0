"""Datasets: list categories and read splits of MVTec AD, VisA, MVTec-layout folders and the generated ones.

Importing this package stays light (no torch): the torch dataset and the dataset generators are
imported on first use of their names, so composing a config or checking a dataset root is fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from anorefine.data.mvtec import MVTEC_CATEGORIES, list_layout_categories, read_layout_split
from anorefine.data.records import DATASET_KINDS, ImageRecord, has_ground_truth
from anorefine.data.visa import VISA_CATEGORIES, list_visa_categories, read_visa_split
from anorefine.errors import DataError

__all__ = [
    "DATASET_KINDS",
    "DEMO_CATEGORIES",
    "MVTEC_CATEGORIES",
    "VISA_CATEGORIES",
    "AnomalyImageDataset",
    "ImageRecord",
    "ensure_demo_dataset",
    "ensure_transfer_dataset",
    "has_ground_truth",
    "list_categories",
    "read_split",
    "select_defect_types",
]

#: Names imported on first use: name -> module.
_LAZY = {
    "AnomalyImageDataset": "anorefine.data.dataset",
    "DEMO_CATEGORIES": "anorefine.data.demo",
    "ensure_demo_dataset": "anorefine.data.demo",
    "ensure_transfer_dataset": "anorefine.data.transfer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SPLITS = ("train", "test")

_ROOT_FIX = {
    "mvtec": "download MVTec AD with `python scripts/download.py mvtec --root {root}` or set dataset.root",
    "visa": "download VisA with `python scripts/download.py visa --root {root}` or set dataset.root",
    "folder": "set dataset.root to a folder in the MVTec layout (<category>/train/good, test/<defect|good>)",
    "demo": "generate it with anorefine.data.ensure_demo_dataset({root}) or set dataset.root",
    "transfer": "generate it with anorefine.data.ensure_transfer_dataset({root}) or set dataset.root",
}


def _check_root(kind: str, root: Path) -> Path:
    if kind not in DATASET_KINDS:
        kinds = ", ".join(DATASET_KINDS)
        raise DataError(f"unknown dataset kind '{kind}': set dataset.kind to one of {kinds}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist: {_ROOT_FIX[kind].format(root=root)}")
    return root


def list_categories(kind: str, root: Path) -> list[str]:
    """Categories present under `root`: official ones in official order (mvtec, visa), else sorted."""
    root = _check_root(kind, root)
    if kind == "visa":
        return list_visa_categories(root)
    found = list_layout_categories(root)
    return [c for c in MVTEC_CATEGORIES if c in found] if kind == "mvtec" else found


def read_split(kind: str, root: Path, category: str, split: str) -> list[ImageRecord]:
    """Records of `split` ("train" or "test") of one category, in a sorted, deterministic order."""
    available = list_categories(kind, root)
    root = Path(root)
    if category not in available:
        raise DataError(
            f"category '{category}' is not in the {kind} dataset at {root} (available: "
            f"{', '.join(available) or 'none'}): set dataset.categories to a list of available ones"
        )
    if split not in SPLITS:
        raise DataError(f"split '{split}' is not one of {', '.join(SPLITS)}")
    if kind == "visa":
        return read_visa_split(root, category, split)
    return read_layout_split(root, category, split, masks_optional=kind == "folder")


def select_defect_types(records: list[ImageRecord], defect_types: list[str] | None) -> list[ImageRecord]:
    """The good records and those of ``defect_types`` (all records when None); each type must exist."""
    if defect_types is None:
        return records
    found = sorted({r.defect_type for r in records if r.label == 1})
    missing = [t for t in defect_types if t not in found]
    if missing:
        category = records[0].category if records else "?"
        raise DataError(
            f"dataset.defect_types: {missing[0]!r} is not a defect type of category {category!r} "
            f"(found: {', '.join(found) or 'none'}); set dataset.defect_types to some of them or null"
        )
    return [r for r in records if r.label == 0 or r.defect_type in defect_types]
