"""Any MVTec-layout folder (``dataset=folder dataset.root=DIR``): categories sorted, masks optional."""

from __future__ import annotations

from anorefine.datasets.mvtec import LayoutDataset


class FolderDataset(LayoutDataset):
    """A user's own images in the MVTec layout; a category without ground_truth/ is scored image-level."""

    masks_optional = True
