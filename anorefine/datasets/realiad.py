"""Real-IAD (Wang et al., CVPR 2024) as it ships, the tree anomalib 2.7's ``realiad.py`` reads:

<root>/realiad_<resolution>/<category>/OK/<sample>/<category>_<n>_OK_C<view>_<time>.jpg
<root>/realiad_<resolution>/<category>/NG/<defect>/<sample>/<...>_C<view>_<time>.jpg and <...>_mask.png
<root>/realiad_jsons/<json_variant>/<category>.json

``resolution``: ``1024`` (folder realiad_1024), ``512``, ``256`` or ``raw``. ``json_variant``: the split
files, ``realiad_jsons`` (the multi-view protocol), ``realiad_jsons_sv`` (single-view) or
``realiad_jsons_fuiad_0.0`` ... ``_0.4`` (fully unsupervised: anomalies in train). A split file is
``{"meta": {...}, "train": [...], "test": [...]}``, each item ``{"category", "anomaly_class" ("OK" or a
defect code), "image_path", "mask_path" (null for OK)}``, paths relative to the category folder.

Every image is one camera view (``C1``..``C5``) of a physical sample (its folder, ``sample_id``);
``views`` selects the views read, each scored as its own image (single-view evaluation). The
multi-view sample-level score is ``anorefine.metrics.multiview.sample_scores``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from anorefine.data.mvtec import GOOD
from anorefine.data.records import ImageRecord
from anorefine.datasets.base import DatasetSource
from anorefine.errors import DataError

REALIAD_CATEGORIES = (
    "audiojack", "bottle_cap", "button_battery", "end_cap", "eraser", "fire_hood", "mint", "mounts", "pcb",
    "phone_battery", "plastic_nut", "plastic_plug", "porcelain_doll", "regulator", "rolled_strip_base",
    "sim_card_set", "switch", "tape", "terminalblock", "toothbrush", "toy", "toy_brick", "transistor1",
    "u_block", "usb", "usb_adaptor", "vcpill", "wooden_beads", "woodstick", "zipper",
)  # fmt: skip
REALIAD_VIEWS = ("C1", "C2", "C3", "C4", "C5")
#: The ``anomaly_class`` of a normal image; the folder of the split files under the root.
NORMAL_CLASS, JSONS = "OK", "realiad_jsons"
_VIEW = re.compile(r"_(C\d)_")


class RealIAD(DatasetSource):
    """Real-IAD: 30 categories, 5 views per sample; splits from the JSON files of ``json_variant``."""

    official_categories = REALIAD_CATEGORIES

    def __init__(
        self,
        *,
        resolution: str = "1024",
        json_variant: str = "realiad_jsons",
        views: Sequence[str] = REALIAD_VIEWS,
        **common: Any,
    ) -> None:
        """``common``: the ``DatasetSource`` settings (name, root, categories, ...)."""
        super().__init__(**common)
        unknown = [view for view in views if view not in REALIAD_VIEWS]
        if unknown or not views:
            raise DataError(
                f"dataset.views={list(views)}: {unknown[0] if unknown else 'empty'} is not a Real-IAD "
                f"view; use some of {', '.join(REALIAD_VIEWS)}"
            )
        self.resolution, self.json_variant, self.views = str(resolution), json_variant, tuple(views)

    def root_hint(self) -> str:
        return (
            "Real-IAD is downloaded after a form: request it at https://realiad4ad.github.io/Real-IAD/, "
            f"extract realiad_{self.resolution} and realiad_jsons into {self.root}, or set dataset.root "
            "(or $REALIAD_ROOT)"
        )

    def images_root(self) -> Path:
        """``<root>/realiad_<resolution>``, which must exist."""
        root = self.ensure_root()
        folder = root / f"realiad_{self.resolution}"
        if not folder.is_dir():
            found = sorted(p.name.removeprefix("realiad_") for p in root.glob("realiad_*") if p.name != JSONS)
            raise DataError(
                f"{folder} does not exist (dataset.resolution={self.resolution}): set dataset.resolution to "
                f"one under {root} ({', '.join(found) or 'none'}) or extract realiad_{self.resolution} there"
            )
        return folder

    def list_categories(self) -> list[str]:
        images = self.images_root()
        return [c for c in self.official_categories if (images / c).is_dir()]

    def read_split(self, category: str, split: str) -> list[ImageRecord]:
        json_path = self.ensure_root() / JSONS / self.json_variant / f"{category}.json"
        items = _split_items(json_path, split)
        cat_dir = self.images_root() / category
        records = [_record(cat_dir, json_path, split, index, item) for index, item in enumerate(items)]
        return sorted(
            (r for r in records if _view(r.image_path) in self.views), key=lambda r: str(r.image_path)
        )


def _split_items(json_path: Path, split: str) -> list[dict[str, Any]]:
    """The items of ``split`` in a Real-IAD split file."""
    if not json_path.is_file():
        raise DataError(
            f"Real-IAD split file {json_path} does not exist: extract realiad_jsons there, or set "
            f"dataset.json_variant to a folder of {json_path.parent.parent}"
        )
    try:
        content = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read Real-IAD split file {json_path}: {err}; restore it") from err
    items = content.get(split) if isinstance(content, dict) else None
    if not isinstance(items, list):
        raise DataError(f"Real-IAD split file {json_path} has no {split!r} list: not a Real-IAD split file")
    return items


def _record(cat_dir: Path, json_path: Path, split: str, index: int, item: Any) -> ImageRecord:
    """One split-file item as a record, its files checked to exist."""
    where = f"Real-IAD split file {json_path} {split}[{index}]"
    if not (isinstance(item, dict) and isinstance(item.get("image_path"), str) and item.get("anomaly_class")):
        raise DataError(f"{where}: expected an object with image_path and anomaly_class, got {item!r}")
    image = cat_dir / item["image_path"]
    if not image.is_file():
        raise DataError(f"{where}: image {image} does not exist; re-extract Real-IAD into {cat_dir.parent}")
    label = int(item["anomaly_class"] != NORMAL_CLASS)
    mask = None
    if label and item.get("mask_path"):
        mask = cat_dir / item["mask_path"]
        if not mask.is_file():
            raise DataError(f"{where}: mask {mask} does not exist; re-extract Real-IAD into {cat_dir.parent}")
    sample = PurePosixPath(item["image_path"]).parent.as_posix()
    defect = str(item["anomaly_class"]) if label else GOOD
    return ImageRecord(image, mask, label, defect, cat_dir.name, sample_id=sample)


def _view(image: Path) -> str:
    """The camera view an image's name carries (``..._C3_...``)."""
    found = _VIEW.search(image.name)
    if found is None:
        raise DataError(f"Real-IAD image {image} names no view (_C1_.._C5_): not a Real-IAD file name")
    return found.group(1)
