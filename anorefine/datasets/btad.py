"""BTAD (beanTech Anomaly Detection; Mishra et al., ICIP 2021) as ``btad.zip`` ships it
(``BTech_Dataset_transformed/``), the tree anomalib 2.7's ``btech.py`` reads:

<root>/<01|02|03>/train/ok/*.bmp|*.png
<root>/<category>/test/<ok|ko>/*.bmp|*.png
<root>/<category>/ground_truth/ko/<stem>.png|.bmp

Image and mask suffixes differ between categories (anomalib converts every .bmp to .png after its
download); this reader needs no conversion: a defective image's mask is the ground-truth file of its
stem, whatever its suffix.
"""

from __future__ import annotations

from anorefine.datasets.mvtec import BenchmarkLayoutDataset

BTAD_CATEGORIES = ("01", "02", "03")


class BTAD(BenchmarkLayoutDataset):
    """BTAD: 3 industrial products; normal images in ``ok``, defective ones in ``ko`` with masks."""

    official_categories = BTAD_CATEGORIES
    good_folder = "ok"

    def root_hint(self) -> str:
        return f"download BTAD with `python scripts/download.py btad --root {self.root}` or set dataset.root"
