"""Ground-truth regions: 8-connected components of each image's mask, with ids global across images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

# 3x3 ones within each image, nothing across images: one scipy call labels every image separately,
# numbering the regions of image 0 first, then image 1, ... (ids 1..R; 0 is normal).
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


class RegionNumbering:
    """Labels mask parts one after another with region ids global over all parts; sums region sizes.

    Each image is labelled exactly once, on the CPU (scipy, never a GPU max-pool approximation).
    ``sizes``: pixel count of every id 0..R so far, index 0 = normal pixels, int64 on the CPU;
    ``shares``: each region's pixel count over its image's pixel count (H * W), float64 (R,).
    """

    def __init__(self) -> None:
        self.num_regions = 0
        self.num_normal = 0
        self._region_sizes: list[Tensor] = []
        self._region_shares: list[Tensor] = []

    def label(self, masks: Tensor) -> Tensor:
        """int32 global region ids of one (N,H,W) bool part, on the masks' device."""
        labels = np.empty(masks.shape, dtype=np.int32)
        count = ndimage.label(masks.cpu().numpy(), structure=_STRUCTURE, output=labels)
        local_sizes = torch.from_numpy(np.bincount(labels.reshape(-1), minlength=count + 1))
        self.num_normal += int(local_sizes[0])
        self._region_sizes.append(local_sizes[1:])
        self._region_shares.append(local_sizes[1:].to(torch.float64) / (masks.shape[1] * masks.shape[2]))
        if self.num_regions:
            labels[labels > 0] += self.num_regions
        self.num_regions += count
        return torch.from_numpy(labels).to(masks.device)

    def label_each(self, parts: Sequence[Tensor]) -> Iterator[Tensor]:
        """:meth:`label` each part in turn, lazily (one part's labels alive at a time)."""
        for part in parts:
            yield self.label(part)

    @property
    def sizes(self) -> Tensor:
        """Pixel count per id 0..R."""
        return torch.cat([torch.tensor([self.num_normal]), *self._region_sizes])

    @property
    def shares(self) -> Tensor:
        """Area share of every region 1..R in its image."""
        return torch.cat([torch.zeros(0, dtype=torch.float64), *self._region_shares])


def label_regions(masks: Tensor) -> tuple[Tensor, int]:
    """Label (N,H,W) bool masks on the CPU; return int32 region ids on the masks' device and R."""
    numbering = RegionNumbering()
    return numbering.label(masks), numbering.num_regions
