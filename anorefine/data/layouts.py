"""Facts of MVTec AD and VisA as released: per category the image size and mode and the count of
every split and defect type (what ``anorefine.data.standin`` reproduces; docs/datasets.md).

VisA's counts are those of its 1-class split (``split_csv/1cls.csv``): train holds normal images
only, test the remaining normal images and every anomaly, listed as the one defect type ``anomaly``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class CategoryLayout:
    """One category: image ``size`` (W, H), PIL ``mode``, good images per split, defect types."""

    size: tuple[int, int]
    mode: Literal["RGB", "L"]
    train_good: int
    test_good: int
    #: (defect type, test images of it), in the dataset's sorted folder order.
    defects: tuple[tuple[str, int], ...]

    @property
    def test_defective(self) -> int:
        """Defective test images over all defect types."""
        return sum(count for _, count in self.defects)


def _mvtec(side: int, mode: Literal["RGB", "L"], train: int, good: int, **defects: int) -> CategoryLayout:
    return CategoryLayout((side, side), mode, train, good, tuple(defects.items()))


def _visa(size: tuple[int, int], train: int, test_normal: int, anomaly: int) -> CategoryLayout:
    return CategoryLayout(size, "RGB", train, test_normal, (("anomaly", anomaly),))


#: MVTec AD: square PNGs; grid, screw and zipper are greyscale. 3629 train and 1725 test images.
MVTEC_LAYOUTS: dict[str, CategoryLayout] = {
    "bottle": _mvtec(900, "RGB", 209, 20, broken_large=20, broken_small=22, contamination=21),
    "cable": _mvtec(
        1024, "RGB", 224, 58, bent_wire=13, cable_swap=12, combined=11, cut_inner_insulation=14,
        cut_outer_insulation=10, missing_cable=12, missing_wire=10, poke_insulation=10,
    ),
    "capsule": _mvtec(1000, "RGB", 219, 23, crack=23, faulty_imprint=22, poke=21, scratch=23, squeeze=20),
    "carpet": _mvtec(1024, "RGB", 280, 28, color=19, cut=17, hole=17, metal_contamination=17, thread=19),
    "grid": _mvtec(1024, "L", 264, 21, bent=12, broken=12, glue=11, metal_contamination=11, thread=11),
    "hazelnut": _mvtec(1024, "RGB", 391, 40, crack=18, cut=17, hole=18, print=17),
    "leather": _mvtec(1024, "RGB", 245, 32, color=19, cut=19, fold=17, glue=19, poke=18),
    "metal_nut": _mvtec(700, "RGB", 220, 22, bent=25, color=22, flip=23, scratch=23),
    "pill": _mvtec(
        800, "RGB", 267, 26, color=25, combined=17, contamination=21, crack=26, faulty_imprint=19,
        pill_type=9, scratch=24,
    ),
    "screw": _mvtec(
        1024, "L", 320, 41, manipulated_front=24, scratch_head=24, scratch_neck=25, thread_side=23,
        thread_top=23,
    ),
    "tile": _mvtec(840, "RGB", 230, 33, crack=17, glue_strip=18, gray_stroke=16, oil=18, rough=15),
    "toothbrush": _mvtec(1024, "RGB", 60, 12, defective=30),
    "transistor": _mvtec(1024, "RGB", 213, 60, bent_lead=10, cut_lead=10, damaged_case=10, misplaced=10),
    "wood": _mvtec(1024, "RGB", 247, 19, color=8, combined=11, hole=10, liquid=10, scratch=21),
    "zipper": _mvtec(
        1024, "L", 240, 32, broken_teeth=19, combined=16, fabric_border=17, fabric_interior=16, rough=17,
        split_teeth=18, squeezed_teeth=16,
    ),
}  # fmt: skip

#: VisA: RGB JPEGs of several sizes; per category the image width and height, and the train normal,
#: test normal and test anomalous images (one row per category, official order).
_VISA_TABLE = """
category    width  height  train  test_normal  test_anomalous
candle      1284   1168    900    100          100
capsules    1500   1000    542    60           100
cashew      1274   1000    450    50           100
chewinggum  1342   1000    453    50           100
fryum       1500   1000    450    50           100
macaroni1   1500   1000    900    100          100
macaroni2   1500   1000    900    100          100
pcb1        1404   1000    904    100          100
pcb2        1404   1000    901    100          100
pcb3        1404   1000    905    101          100
pcb4        1404   1000    904    101          100
pipe_fryum  1500   1000    450    50           100
"""


def _visa_layouts(table: str) -> dict[str, CategoryLayout]:
    rows = [line.split() for line in table.strip().splitlines()[1:]]
    return {name: _visa((int(w), int(h)), int(a), int(b), int(c)) for name, w, h, a, b, c in rows}


VISA_LAYOUTS: dict[str, CategoryLayout] = _visa_layouts(_VISA_TABLE)
