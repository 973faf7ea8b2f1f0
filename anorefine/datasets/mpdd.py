"""MPDD (Metal Parts Defect Detection; Jezek et al., ICUMT 2021) as it ships: the MVTec AD layout,
as anomalib 2.7's ``mpdd.py`` reads it.

<root>/<category>/train/good/*.png
<root>/<category>/test/<good|defect>/*.png
<root>/<category>/ground_truth/<defect>/<stem>_mask.png
"""

from __future__ import annotations

from anorefine.datasets.mvtec import BenchmarkLayoutDataset

MPDD_CATEGORIES = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes")


class MPDD(BenchmarkLayoutDataset):
    """MPDD: 6 categories of painted metal parts, every defective image with its mask."""

    official_categories = MPDD_CATEGORIES

    def root_hint(self) -> str:
        return (
            f"MPDD has no stable archive URL: get it from https://github.com/stepanje/MPDD, extract it "
            f"into {self.root}, or set dataset.root (or $MPDD_ROOT)"
        )
