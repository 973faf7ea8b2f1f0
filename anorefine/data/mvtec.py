"""Reader of the MVTec AD folder layout, shared by the mvtec, folder, demo, MPDD, BTAD and LOCO datasets.

<root>/<category>/train/good/*.png            (and validation/good/ where a dataset has it)
<root>/<category>/test/<good|defect>/*.png
<root>/<category>/ground_truth/<defect>/<stem>_mask.png

The normal folder's name (``good``; BTAD: ``ok``) and where a defective image's mask lies (``find_mask``;
MVTec LOCO AD: a folder of masks) are parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from anorefine.data.layouts import MVTEC_LAYOUTS
from anorefine.data.records import IMAGE_SUFFIXES, ImageRecord, is_image_file
from anorefine.errors import DataError

MVTEC_CATEGORIES: tuple[str, ...] = tuple(MVTEC_LAYOUTS)

GOOD = "good"
#: Splits of normal images only, read from ``<split>/<good>``.
NORMAL_SPLITS = ("train", "validation")
#: (the defect's ground-truth folder, a defective image) -> its mask: found, or where it should be.
MaskFinder = Callable[[Path, Path], Path]


def list_layout_categories(root: Path, good: str = GOOD) -> list[str]:
    """Sorted subfolders of `root` that hold train/<good> or test/."""
    return sorted(d.name for d in root.iterdir() if (d / "train" / good).is_dir() or (d / "test").is_dir())


def images_in(folder: Path) -> list[Path]:
    """The image files of `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def find_mask_file(gt_dir: Path, image: Path) -> Path:
    """The mask of `image` in `gt_dir`: `<stem>_mask.<ext>` (MVTec) or `<stem>.<ext>` (BTAD); when
    there is none, where MVTec's would be."""
    for name in (f"{image.stem}_mask", image.stem):
        for suffix in IMAGE_SUFFIXES:
            candidate = gt_dir / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return gt_dir / f"{image.stem}_mask.png"


def read_layout_split(
    root: Path,
    category: str,
    split: str,
    *,
    masks_optional: bool,
    good: str = GOOD,
    find_mask: MaskFinder = find_mask_file,
) -> list[ImageRecord]:
    """Records of one split of one category, sorted by defect type then file name.

    A split of ``NORMAL_SPLITS`` is read from ``<split>/<good>``, any other from its defect folders.
    With `masks_optional`, a category without any ground_truth/ folder yields image-level
    records (mask_path None); a category that has ground_truth/ must have every mask.
    """
    cat_dir = root / category
    split_dir = cat_dir / split
    normal_only = split in NORMAL_SPLITS
    if normal_only:
        split_dir = split_dir / good
    if not split_dir.is_dir():
        raise DataError(
            f"{split_dir} does not exist: category '{category}' needs it in the MVTec layout "
            f"(<root>/<category>/train/{good}, test/<defect|{good}>)"
        )
    defect_dirs = [split_dir] if normal_only else sorted(d for d in split_dir.iterdir() if d.is_dir())
    gt_root = cat_dir / "ground_truth"
    image_level_only = masks_optional and not gt_root.is_dir()
    records = []
    for defect_dir in defect_dirs:
        defect = good if normal_only else defect_dir.name
        for image in images_in(defect_dir):
            mask = None
            if defect != good and not image_level_only:
                mask = find_mask(gt_root / defect, image)
                if not mask.exists():
                    fix = (
                        "add the mask, or remove ground_truth/ to evaluate image-level only"
                        if masks_optional
                        else "restore it (the dataset ships one mask per defective image)"
                    )
                    raise DataError(f"defective image {image} has no mask: expected {mask}; {fix}")
            records.append(ImageRecord(image, mask, int(defect != good), defect, category))
    if not records:
        raise DataError(f"no images (*{', *'.join(IMAGE_SUFFIXES)}) under {split_dir}")
    return records
