"""Data: the readers of each layout, image records, the torch dataset and the dataset generators
(the datasets themselves, as components, are ``anorefine.datasets``).

Importing this package stays light (no torch): the torch dataset and the dataset generators are
imported on first use of their names, so composing a config or checking a dataset root is fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from anorefine.data.mvtec import MVTEC_CATEGORIES
from anorefine.data.records import ImageRecord, has_ground_truth
from anorefine.data.visa import VISA_CATEGORIES

__all__ = [
    "DEMO_CATEGORIES",
    "MVTEC_CATEGORIES",
    "VISA_CATEGORIES",
    "AnomalyImageDataset",
    "ImageRecord",
    "ensure_demo_dataset",
    "ensure_transfer_dataset",
    "has_ground_truth",
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
