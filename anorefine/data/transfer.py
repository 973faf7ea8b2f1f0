"""The transfer dataset: every defect kind on every texture, for leave-one-kind-out evaluation.

``<root>/<texture>/{train/good, test/good, test/<kind>, ground_truth/<kind>}`` in the MVTec layout,
one category per texture of ``TEXTURES`` and one defect folder per kind of ``DEFECT_KINDS``. A run
holds one kind out (``dataset.defect_types=[KIND]``: only that kind and the good images are
tested) while PGT synthesises with the others (``curriculum.synthesis.exclude=[KIND]``), so the
refiner is scored on a kind of defect it never trained on (docs/transfer.md).
"""

from __future__ import annotations

from pathlib import Path

from anorefine.data.defects import DEFECT_KINDS
from anorefine.data.generated import ensure_texture_dataset
from anorefine.data.textures import TEXTURES

GENERATOR_VERSION = 2  # 2: the kinds burn, warp and faint added; the other kinds' images are unchanged
N_TRAIN, N_TEST_GOOD, N_PER_KIND = 60, 20, 12
#: Random streams of one texture: 0 train, 1 test/good, then per kind its images and their donors.
_DONOR_STREAMS = 1000


def ensure_transfer_dataset(root: Path, seed: int = 0) -> Path:
    """Generate the transfer dataset into ``root`` unless a complete one with this seed is there."""
    counts = (N_TRAIN, N_TEST_GOOD, N_PER_KIND)
    kinds = tuple(DEFECT_KINDS)
    return ensure_texture_dataset(
        root, "anorefine.data.transfer", GENERATOR_VERSION, seed, TEXTURES, counts, kinds, _DONOR_STREAMS
    )
