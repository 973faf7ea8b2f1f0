"""MVTec AD in its native layout: ``<root>/<category>/{train,test,ground_truth}`` (docs/datasets.md)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from anorefine.data.mvtec import (
    GOOD,
    MVTEC_CATEGORIES,
    find_mask_file,
    list_layout_categories,
    read_layout_split,
)
from anorefine.data.records import ImageRecord
from anorefine.datasets.base import DatasetSource


class LayoutDataset(DatasetSource):
    """Any tree in the MVTec AD layout; ``masks_optional``: a category without ground_truth/ is read
    image-level only; ``good_folder``: the folder of normal images; ``find_mask``: where a defective
    image's mask lies."""

    masks_optional: ClassVar[bool] = False
    good_folder: ClassVar[str] = GOOD

    def root_hint(self) -> str:
        return "set dataset.root to a folder in the MVTec layout (<category>/train/good, test/<defect|good>)"

    def list_categories(self) -> list[str]:
        return list_layout_categories(self.ensure_root(), self.good_folder)

    def find_mask(self, gt_dir: Path, image: Path) -> Path:
        """The mask of defective ``image`` in its defect's ground-truth folder (or where it should be)."""
        return find_mask_file(gt_dir, image)

    def read_split(self, category: str, split: str) -> list[ImageRecord]:
        return read_layout_split(
            self.ensure_root(),
            category,
            split,
            masks_optional=self.masks_optional,
            good=self.good_folder,
            find_mask=self.find_mask,
        )


class BenchmarkLayoutDataset(LayoutDataset):
    """A published benchmark in the MVTec layout: only its official categories, in official order."""

    def list_categories(self) -> list[str]:
        found = super().list_categories()
        return [c for c in self.official_categories if c in found]


class MVTecAD(BenchmarkLayoutDataset):
    """MVTec AD: 15 categories, every defective image with its mask; AnomalyCLIP's partner is VisA."""

    aux_partner = "visa"
    official_categories = MVTEC_CATEGORIES

    def root_hint(self) -> str:
        return (
            f"download MVTec AD with `python scripts/download.py mvtec --root {self.root}` "
            "or set dataset.root"
        )
