"""VisA as it ships: ``split_csv/1cls.csv`` over ``<category>/Data/{Images,Masks}`` (docs/datasets.md)."""

from __future__ import annotations

from anorefine.data.records import ImageRecord
from anorefine.data.visa import VISA_CATEGORIES, list_visa_categories, read_visa_split
from anorefine.datasets.base import DatasetSource


class VisA(DatasetSource):
    """VisA: 12 categories, masks of value 0/255 or 0/1 (MuSc's rule: any non-zero pixel is defective);
    AnomalyCLIP's partner is MVTec AD."""

    aux_partner = "mvtec"
    musc_mask_rule = "nonzero"
    musc_k_list = (1, 8, 9)
    official_categories = VISA_CATEGORIES

    def root_hint(self) -> str:
        return f"download VisA with `python scripts/download.py visa --root {self.root}` or set dataset.root"

    def list_categories(self) -> list[str]:
        return list_visa_categories(self.ensure_root())

    def read_split(self, category: str, split: str) -> list[ImageRecord]:
        return read_visa_split(self.ensure_root(), category, split)
