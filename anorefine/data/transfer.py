"""The transfer dataset: every defect kind on every texture, for leave-one-kind-out evaluation.

``<root>/<texture>/{train/good, test/good, test/<kind>, ground_truth/<kind>}`` in the MVTec layout,
one category per texture of ``TEXTURES`` and one defect folder per kind of ``DEFECT_KINDS``. A run
holds one kind out (``dataset.defect_types=[KIND]``: only that kind and the good images are
tested) while PGT synthesises with the others (``curriculum.synthesis.exclude=[KIND]``), so the
refiner is scored on a kind of defect it never trained on (docs/transfer.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anorefine.data.defects import DEFECT_KINDS, paint_defect
from anorefine.data.generated import ensure_generated, save_png
from anorefine.data.textures import TEXTURES, load_texture, normal_image

GENERATOR_VERSION = 1
N_TRAIN, N_TEST_GOOD, N_PER_KIND = 60, 20, 12
#: Random streams of one texture: 0 train, 1 test/good, then per kind its images and their donors.
_DONOR_STREAMS = 1000


def _generate_texture(dest: Path, index: int, name: str, seed: int) -> None:
    """Write one texture's category: normal train and test images, then every kind's defects."""
    texture, tint = load_texture(name, seed)

    def rng(stream: int, i: int) -> np.random.Generator:
        return np.random.default_rng([seed, index, stream, i])

    for i in range(N_TRAIN):
        save_png(normal_image(texture, tint, rng(0, i)), dest / "train" / "good" / f"{i:03d}.png")
    for i in range(N_TEST_GOOD):
        save_png(normal_image(texture, tint, rng(1, i)), dest / "test" / "good" / f"{i:03d}.png")
    for stream, kind in enumerate(DEFECT_KINDS, start=2):
        for i in range(N_PER_KIND):
            r = rng(stream, i)
            donor = normal_image(texture, tint, rng(_DONOR_STREAMS + stream, i))
            image, mask = paint_defect(normal_image(texture, tint, r), kind, r, donor)
            save_png(image, dest / "test" / kind / f"{i:03d}.png")
            save_png(mask.astype(np.uint8) * 255, dest / "ground_truth" / kind / f"{i:03d}_mask.png")


def ensure_transfer_dataset(root: Path, seed: int = 0) -> Path:
    """Generate the transfer dataset into ``root`` unless a complete one with this seed is there."""

    def write(folder: Path) -> None:
        for index, name in enumerate(TEXTURES):
            _generate_texture(folder / name, index, name, seed)

    marker = {"generator": "anorefine.data.transfer", "version": GENERATOR_VERSION, "seed": seed}
    return ensure_generated(root, marker, write)
