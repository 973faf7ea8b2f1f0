"""Images of one stand-in category: our texture crops zoomed to its size, with painted defects."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from anorefine.data.defects import DEFECT_KINDS, paint_defect
from anorefine.data.textures import load_texture, normal_image

#: Kinds that keep luminance: invisible once a greyscale category is converted to mode L.
_LUMA_KEEPING = frozenset({"colour"})


class CategoryPainter:
    """Draws a category's images at ``size`` (W, H) in PIL ``mode`` from ``texture``; ``rng(stream, i)``
    gives the random stream of image ``i`` of a stream."""

    def __init__(
        self,
        texture: str,
        size: tuple[int, int],
        mode: str,
        seed: int,
        rng: Callable[[int, int], np.random.Generator],
    ) -> None:
        self.texture, self.tint = load_texture(texture, seed)
        self.size, self.mode, self.rng = size, mode, rng
        self.kinds = [kind for kind in DEFECT_KINDS if mode == "RGB" or kind not in _LUMA_KEEPING]

    def _crop(self, stream: int, i: int) -> np.ndarray:
        """A texture crop (``normal_image``) zoomed to fill the size: its centre kept, aspect unchanged."""
        square = normal_image(self.texture, self.tint, self.rng(stream, i))
        (width, height), side = self.size, square.shape[0]
        crop_w, crop_h = side * min(1.0, width / height), side * min(1.0, height / width)
        box = ((side - crop_w) / 2, (side - crop_h) / 2, (side + crop_w) / 2, (side + crop_h) / 2)
        return np.asarray(Image.fromarray(square).resize(self.size, Image.Resampling.BILINEAR, box=box))

    def normal(self, stream: int, i: int) -> Image.Image:
        """A good image."""
        return Image.fromarray(self._crop(stream, i)).convert(self.mode)

    def defective(self, stream: int, i: int, position: int) -> tuple[Image.Image, np.ndarray]:
        """A good image with one defect and its (H, W) bool mask; the painter kind is the one at
        ``position`` of a cycle through the kinds that show in the category's mode."""
        kind = self.kinds[position % len(self.kinds)]
        painted, mask = paint_defect(self._crop(stream, i), kind, self.rng(stream, i))
        return Image.fromarray(painted).convert(self.mode), mask
