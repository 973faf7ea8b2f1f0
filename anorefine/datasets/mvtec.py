"""MVTec AD in its native layout: ``<root>/<category>/{train,test,ground_truth}`` (docs/datasets.md)."""

from __future__ import annotations

from typing import ClassVar

from anorefine.data.mvtec import MVTEC_CATEGORIES, list_layout_categories, read_layout_split
from anorefine.data.records import ImageRecord
from anorefine.datasets.base import DatasetSource


class LayoutDataset(DatasetSource):
    """Any tree in the MVTec AD layout; ``masks_optional``: a category without ground_truth/ is read
    image-level only."""

    masks_optional: ClassVar[bool] = False

    def root_hint(self) -> str:
        return "set dataset.root to a folder in the MVTec layout (<category>/train/good, test/<defect|good>)"

    def list_categories(self) -> list[str]:
        return list_layout_categories(self.ensure_root())

    def read_split(self, category: str, split: str) -> list[ImageRecord]:
        return read_layout_split(self.ensure_root(), category, split, masks_optional=self.masks_optional)


class MVTecAD(LayoutDataset):
    """MVTec AD: 15 categories, every defective image with its mask; AnomalyCLIP's partner is VisA."""

    aux_partner = "visa"
    official_categories = MVTEC_CATEGORIES

    def root_hint(self) -> str:
        return (
            f"download MVTec AD with `python scripts/download.py mvtec --root {self.root}` "
            "or set dataset.root"
        )

    def list_categories(self) -> list[str]:
        found = super().list_categories()
        return [c for c in MVTEC_CATEGORIES if c in found]
