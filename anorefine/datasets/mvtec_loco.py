"""MVTec LOCO AD (Bergmann et al., IJCV 2022) as it ships, the tree anomalib 2.7's ``mvtec_loco.py``
reads:

<root>/<category>/train/good/*.png
<root>/<category>/validation/good/*.png
<root>/<category>/test/<good|logical_anomalies|structural_anomalies>/<stem>.png
<root>/<category>/ground_truth/<logical_anomalies|structural_anomalies>/<stem>/000.png, 001.png, ...

A defective image's mask is its ground-truth folder: one file per defect, each marking it with its own
non-zero value; their union (any file non-zero) is the image's mask (``anorefine.data.dataset.mask_files``).
"""

from __future__ import annotations

from pathlib import Path

from anorefine.datasets.base import SPLITS
from anorefine.datasets.mvtec import BenchmarkLayoutDataset

LOCO_CATEGORIES = ("breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors")


class MVTecLOCO(BenchmarkLayoutDataset):
    """MVTec LOCO AD: 5 categories, logical and structural anomalies, a normal validation split."""

    splits = (*SPLITS, "validation")
    official_categories = LOCO_CATEGORIES

    def root_hint(self) -> str:
        return (
            f"download MVTec LOCO AD with `python scripts/download.py mvtec_loco --root {self.root}` "
            "(or from https://www.mvtec.com/company/research/datasets/mvtec-loco) or set dataset.root"
        )

    def find_mask(self, gt_dir: Path, image: Path) -> Path:
        """The folder of the image's mask files, ``<defect>/<stem>/``."""
        return gt_dir / image.stem
