"""Ground-truth regions: 8-connected components of each image's mask, with ids global across images."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

# 3x3 ones within each image, nothing across images: one scipy call labels every image separately,
# numbering the regions of image 0 first, then image 1, ... (ids 1..R; 0 is normal).
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


def label_regions(masks: Tensor) -> tuple[Tensor, int]:
    """Label (N,H,W) bool masks on the CPU; return int32 region ids on the masks' device and R."""
    labels = np.empty(masks.shape, dtype=np.int32)
    num_regions = ndimage.label(masks.cpu().numpy(), structure=_STRUCTURE, output=labels)
    return torch.from_numpy(labels).to(masks.device), int(num_regions)


def region_sizes(region_ids: Tensor, num_regions: int) -> Tensor:
    """Pixel count of every id 0..R (index 0: normal pixels), int64."""
    return torch.bincount(region_ids.reshape(-1), minlength=num_regions + 1)
