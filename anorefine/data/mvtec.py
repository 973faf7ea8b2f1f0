"""Reader of the MVTec AD folder layout, shared by the mvtec, folder and demo datasets.

<root>/<category>/train/good/*.png
<root>/<category>/test/<good|defect>/*.png
<root>/<category>/ground_truth/<defect>/<stem>_mask.png
"""

from __future__ import annotations

from pathlib import Path

from anorefine.data.layouts import MVTEC_LAYOUTS
from anorefine.data.records import IMAGE_SUFFIXES, ImageRecord, is_image_file
from anorefine.errors import DataError

MVTEC_CATEGORIES: tuple[str, ...] = tuple(MVTEC_LAYOUTS)

GOOD = "good"


def list_layout_categories(root: Path) -> list[str]:
    """Sorted subfolders of `root` that hold train/good or test/."""
    return sorted(d.name for d in root.iterdir() if (d / "train" / GOOD).is_dir() or (d / "test").is_dir())


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _find_mask(gt_dir: Path, image: Path) -> Path | None:
    """The mask of `image` in `gt_dir`: `<stem>_mask.<ext>` (MVTec) or `<stem>.<ext>`."""
    for name in (f"{image.stem}_mask", image.stem):
        for suffix in IMAGE_SUFFIXES:
            candidate = gt_dir / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def read_layout_split(root: Path, category: str, split: str, *, masks_optional: bool) -> list[ImageRecord]:
    """Records of one split of one category, sorted by defect type then file name.

    With `masks_optional`, a category without any ground_truth/ folder yields image-level
    records (mask_path None); a category that has ground_truth/ must have every mask.
    """
    cat_dir = root / category
    split_dir = cat_dir / split
    if split == "train":
        split_dir = split_dir / GOOD
    if not split_dir.is_dir():
        raise DataError(
            f"{split_dir} does not exist: category '{category}' needs it in the MVTec layout "
            f"(<root>/<category>/train/good, test/<defect|good>)"
        )
    defect_dirs = [split_dir] if split == "train" else sorted(d for d in split_dir.iterdir() if d.is_dir())
    gt_root = cat_dir / "ground_truth"
    image_level_only = masks_optional and not gt_root.is_dir()
    records = []
    for defect_dir in defect_dirs:
        defect = GOOD if split == "train" else defect_dir.name
        for image in _images_in(defect_dir):
            mask = None
            if defect != GOOD and not image_level_only:
                mask = _find_mask(gt_root / defect, image)
                if mask is None:
                    fix = (
                        "add the mask, or remove ground_truth/ to evaluate image-level only"
                        if masks_optional
                        else "restore it (the dataset ships one mask per defective image)"
                    )
                    raise DataError(
                        f"defective image {image} has no mask: expected "
                        f"{gt_root / defect / f'{image.stem}_mask.png'}; {fix}"
                    )
            records.append(ImageRecord(image, mask, int(defect != GOOD), defect, category))
    if not records:
        raise DataError(f"no images (*{', *'.join(IMAGE_SUFFIXES)}) under {split_dir}")
    return records
