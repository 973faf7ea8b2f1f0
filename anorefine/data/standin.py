"""Stand-ins of MVTec AD and VisA: trees in the exact released layout, drawn from our own textures.

File names, folders, the VisA split CSV, image sizes, channel modes and mask encodings follow
``anorefine.data.layouts``; every count is the released one scaled by ``fraction`` (``scaled_count``)
and sizes by ``size_scale``. Good images are our texture crops (``textures.normal_image``) zoomed to
the category's size; defective ones carry a defect painted by ``defects.paint_defect`` with its
exact mask. A tree is written once, behind a marker (``generated.ensure_generated``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from anorefine.data.generated import ensure_generated, save_png
from anorefine.data.layouts import MVTEC_LAYOUTS, VISA_LAYOUTS, CategoryLayout
from anorefine.data.mvtec import GOOD
from anorefine.data.visa import CSV_COLUMNS, SPLIT_CSV
from anorefine.errors import DataError

if TYPE_CHECKING:
    from anorefine.data.standin_images import CategoryPainter

LAYOUTS: dict[str, dict[str, CategoryLayout]] = {"mvtec": MVTEC_LAYOUTS, "visa": VISA_LAYOUTS}
GENERATOR, VERSION = "anorefine.data.standin", 1
#: Mask values of a VisA anomaly: 255 as released, 1 as some converted copies ship.
VISA_MASK_VALUES = (255, 1)
#: The painters need images of at least this many pixels on the short side.
MIN_SIDE = 32


@dataclass(frozen=True)
class StandinOptions:
    """What a stand-in tree is drawn with (``write_standin``'s options)."""

    fraction: float
    size_scale: float
    seed: int
    visa_mask_value: int


def scaled_count(count: int, fraction: float) -> int:
    """``count × fraction`` rounded half up, at least 1 (every split and defect type keeps an image);
    the product is first rounded to 9 decimals, so 90 × 0.35 (31.4999… in floating point) gives 32."""
    return max(1, math.floor(round(count * fraction, 9) + 0.5))


def scaled_size(layout: CategoryLayout, size_scale: float) -> tuple[int, int]:
    """The category's (W, H) times ``size_scale``, rounded."""
    return (round(layout.size[0] * size_scale), round(layout.size[1] * size_scale))


def check_options(
    dataset: str,
    categories: Sequence[str] | None,
    fraction: float,
    size_scale: float,
    seed: int = 0,
    visa_mask_value: int = 255,
) -> list[str]:
    """The categories to write (all when None), after checking every option; DataError names the bad
    value and the fix."""
    if dataset not in LAYOUTS:
        raise DataError(f"unknown dataset '{dataset}': use one of {', '.join(LAYOUTS)}")
    layouts = LAYOUTS[dataset]
    chosen = list(layouts) if categories is None else list(dict.fromkeys(categories))
    for category in chosen:
        if category not in layouts:
            raise DataError(
                f"unknown {dataset} category '{category}': use some of {', '.join(layouts)} (comma-separated)"
            )
    if not chosen:
        raise DataError(f"no categories given: use some of {', '.join(layouts)} or leave the option out")
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"fraction {fraction} is not in (0, 1]: use e.g. 0.05 (1 writes the released counts)")
    smallest = min(min(layouts[c].size) for c in chosen)
    if not (math.isfinite(size_scale) and round(smallest * size_scale) >= MIN_SIDE):
        raise DataError(
            f"size scale {size_scale} does not give images of at least {MIN_SIDE} px (the painters' "
            f"minimum): use a finite size scale of at least {MIN_SIDE / smallest:.3f} for these categories"
        )
    if seed < 0:
        raise DataError(f"seed {seed} is negative: use a seed of 0 or more")
    if visa_mask_value not in VISA_MASK_VALUES:
        raise DataError(f"VisA mask value {visa_mask_value} is not one of {VISA_MASK_VALUES}: use 255 or 1")
    return chosen


def _painter(dataset: str, category: str, size_scale: float, seed: int) -> CategoryPainter:
    """The painter of ``category``: texture and random streams fixed by its place in the fact table,
    so a category looks the same whichever others are written with it."""
    from anorefine.data.standin_images import CategoryPainter  # torch (Perlin noise), only when drawing
    from anorefine.data.textures import TEXTURES

    layout = LAYOUTS[dataset][category]
    index, dataset_index = list(LAYOUTS[dataset]).index(category), list(LAYOUTS).index(dataset)

    def rng(stream: int, i: int) -> np.random.Generator:
        return np.random.default_rng([seed, dataset_index, index, stream, i])

    texture = TEXTURES[index % len(TEXTURES)]
    return CategoryPainter(texture, scaled_size(layout, size_scale), layout.mode, seed, rng)


def _kind_offset(dataset: str, category: str) -> int:
    """Defect types listed before ``category`` in the fact table: where its cycle of kinds starts."""
    layouts = LAYOUTS[dataset]
    return sum(len(layouts[c].defects) for c in list(layouts)[: list(layouts).index(category)])


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".JPG":
        image.save(path, format="JPEG", quality=95)
    else:
        save_png(np.asarray(image), path)


def write_mvtec_category(dest: Path, category: str, fraction: float, size_scale: float, seed: int) -> None:
    """One MVTec AD category: train/good, test/<good|defect>, ground_truth/<defect>/<id>_mask.png
    (0/255), numbered from 000 in each folder."""
    layout, painter = MVTEC_LAYOUTS[category], _painter("mvtec", category, size_scale, seed)
    for stream, folder, count in ((0, "train", layout.train_good), (1, "test", layout.test_good)):
        for i in range(scaled_count(count, fraction)):
            _save(painter.normal(stream, i), dest / folder / GOOD / f"{i:03d}.png")
    first = _kind_offset("mvtec", category)
    for j, (defect, count) in enumerate(layout.defects):
        for i in range(scaled_count(count, fraction)):
            image, mask = painter.defective(2 + j, i, first + j)  # one painter kind per defect type
            _save(image, dest / "test" / defect / f"{i:03d}.png")
            save_png(mask.astype(np.uint8) * 255, dest / "ground_truth" / defect / f"{i:03d}_mask.png")


def write_visa_category(
    root: Path, category: str, fraction: float, size_scale: float, seed: int, mask_value: int
) -> list[tuple[str, str, str, str, str]]:
    """One VisA category under ``root``: Data/Images/Normal/0000.JPG, Data/Images/Anomaly/000.JPG and
    Data/Masks/Anomaly/000.png (0 and ``mask_value``); returns its rows of the 1-class split CSV."""
    layout, painter = VISA_LAYOUTS[category], _painter("visa", category, size_scale, seed)
    data, rows = Path(category) / "Data", []
    n_train = scaled_count(layout.train_good, fraction)
    for i in range(n_train + scaled_count(layout.test_good, fraction)):
        image = data / "Images" / "Normal" / f"{i:04d}.JPG"
        _save(painter.normal(0, i), root / image)
        rows.append((category, "train" if i < n_train else "test", "normal", image.as_posix(), ""))
    first = _kind_offset("visa", category)  # VisA's anomalies are of several kinds: one per image
    for i in range(scaled_count(layout.test_defective, fraction)):
        image = data / "Images" / "Anomaly" / f"{i:03d}.JPG"
        mask = data / "Masks" / "Anomaly" / f"{i:03d}.png"
        painted, pixels = painter.defective(1, i, first + i)
        _save(painted, root / image)
        save_png(pixels.astype(np.uint8) * mask_value, root / mask)
        rows.append((category, "test", "anomaly", image.as_posix(), mask.as_posix()))
    return rows


def write_standin(
    dataset: str,
    root: Path,
    categories: Sequence[str] | None = None,
    fraction: float = 0.05,
    size_scale: float = 1.0,
    seed: int = 0,
    visa_mask_value: int = 255,
) -> Path:
    """Write the stand-in of ``dataset`` ("mvtec" or "visa") into ``root`` unless the same one is there
    (a tree of other options is replaced, a folder not written by anorefine refused); return root."""
    chosen = check_options(dataset, categories, fraction, size_scale, seed, visa_mask_value)
    marker = {"generator": GENERATOR, "version": VERSION, "dataset": dataset, "categories": chosen}
    marker |= {"fraction": fraction, "size_scale": size_scale, "seed": seed}
    marker["visa_mask_value"] = visa_mask_value
    options = StandinOptions(fraction, size_scale, seed, visa_mask_value)
    return ensure_generated(Path(root), marker, lambda folder: TREE_WRITERS[dataset](folder, chosen, options))


def write_mvtec_tree(folder: Path, categories: list[str], options: StandinOptions) -> None:
    """MVTec AD's tree: one folder per category."""
    for category in categories:
        write_mvtec_category(folder / category, category, options.fraction, options.size_scale, options.seed)


def write_visa_tree(folder: Path, categories: list[str], options: StandinOptions) -> None:
    """VisA's tree: the categories' folders and the 1-class split CSV over them."""
    rows = []
    for category in categories:
        rows += write_visa_category(
            folder, category, options.fraction, options.size_scale, options.seed, options.visa_mask_value
        )
    (folder / SPLIT_CSV).parent.mkdir(parents=True, exist_ok=True)
    with (folder / SPLIT_CSV).open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([CSV_COLUMNS, *rows])


#: How each dataset's tree is written (the keys of ``LAYOUTS``).
TREE_WRITERS: dict[str, Callable[[Path, list[str], StandinOptions], None]] = {
    "mvtec": write_mvtec_tree,
    "visa": write_visa_tree,
}
