"""MVTec AD 2 (Heckler-Kram et al., 2025) as it ships, the tree anomalib 2.7's ``mvtecad2.py`` reads:

<root>/<category>/train/good/*.png
<root>/<category>/validation/good/*.png
<root>/<category>/test_public/{good,bad}/*.png
<root>/<category>/test_public/ground_truth/bad/<stem>_mask.png
<root>/<category>/test_private/*.png            unlabeled
<root>/<category>/test_private_mixed/*.png      unlabeled (seen and unseen lighting, mixed)

The ``test`` split is ``test_public``, the only test set with published labels. The private ones are
read with label ``UNLABELED``: their ground truth stays on the evaluation server
(https://benchmark.mvtec.com/), so they can be scored with predict.py, never with metrics.
"""

from __future__ import annotations

from pathlib import Path

from anorefine.data.mvtec import GOOD, find_mask_file, images_in, read_layout_split
from anorefine.data.records import UNLABELED, ImageRecord
from anorefine.datasets.base import SPLITS, DatasetSource
from anorefine.errors import DataError

MVTEC_AD2_CATEGORIES = ("can", "fabric", "fruit_jelly", "rice", "sheet_metal", "vial", "wallplugs", "walnuts")
#: The labeled test set (read as split ``test``) and its folder of defective images.
PUBLIC_TEST, BAD = "test_public", "bad"
#: The test sets without published labels.
PRIVATE_SPLITS = ("test_private", "test_private_mixed")


class MVTecAD2(DatasetSource):
    """MVTec AD 2: 8 categories; ``test`` is test_public, ``validation`` normal images, the private test
    sets unlabeled."""

    splits = (*SPLITS, "validation", *PRIVATE_SPLITS)
    unlabeled_splits = PRIVATE_SPLITS
    official_categories = MVTEC_AD2_CATEGORIES

    def root_hint(self) -> str:
        return (
            "MVTec AD 2 is downloaded after a form: get it from "
            f"https://www.mvtec.com/company/research/datasets/mvtec-ad-2, extract it into {self.root}, "
            "or set dataset.root (or $MVTEC_AD2_ROOT)"
        )

    def list_categories(self) -> list[str]:
        root = self.ensure_root()
        return [c for c in self.official_categories if (root / c / "train" / GOOD).is_dir()]

    def read_split(self, category: str, split: str) -> list[ImageRecord]:
        root = self.ensure_root()
        if split in PRIVATE_SPLITS:
            return [
                ImageRecord(p, None, UNLABELED, split, category) for p in _images(root / category / split)
            ]
        if split != "test":
            return read_layout_split(root, category, split, masks_optional=False)
        test_dir = root / category / PUBLIC_TEST
        defective = [
            ImageRecord(image, _mask(test_dir, image), 1, BAD, category) for image in _images(test_dir / BAD)
        ]
        return defective + [ImageRecord(p, None, 0, GOOD, category) for p in _images(test_dir / GOOD)]


def _images(folder: Path) -> list[Path]:
    """The images of one of the dataset's folders, which must exist."""
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist: MVTec AD 2 ships it; re-extract the category there")
    return images_in(folder)


def _mask(test_dir: Path, image: Path) -> Path:
    """A defective public test image's mask, ``ground_truth/bad/<stem>_mask.png``, which must exist."""
    mask = find_mask_file(test_dir / "ground_truth" / BAD, image)
    if not mask.is_file():
        raise DataError(f"defective image {image} has no mask: expected {mask}; restore it from the archive")
    return mask
