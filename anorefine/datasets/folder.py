"""Any MVTec-layout folder (``dataset=folder dataset.root=DIR``): categories sorted, masks optional, and
normal validation images in ``<category>/validation/good`` where the folder has them."""

from __future__ import annotations

from anorefine.datasets.base import SPLITS
from anorefine.datasets.mvtec import LayoutDataset


class FolderDataset(LayoutDataset):
    """A user's own images in the MVTec layout; a category without ground_truth/ is scored image-level."""

    masks_optional = True
    #: ``validation``: normal images held out of the fit (``eval.threshold.source=validation``); a
    #: folder without ``validation/good`` fails naming it when that split is asked for.
    splits = (*SPLITS, "validation")
