"""Synthetic anomalies with exact masks, painted on (pseudo-)normal images for test-time training.

Each synthetic image takes a random pool image and a random kind of ``kinds`` minus ``exclude``
(the painters of ``anorefine.data.defects``); foreign texture comes from another pool image, or
from a user texture folder such as DTD. ``exclude`` is how the transfer protocol holds the tested
kind out of training (docs/transfer.md). All randomness is drawn from torch's global generator,
so a seeded run is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anorefine.data.defects import DEFECT_KINDS, paint_float
from anorefine.errors import DataError

TEXTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DEFAULT_KINDS = ("perlin", "cutpaste")


class AnomalySynthesizer:
    """Paints synthetic anomalies on a pool of images; returns the images and their exact masks."""

    def __init__(
        self,
        kinds: Sequence[str] = DEFAULT_KINDS,
        exclude: Sequence[str] = (),
        area: tuple[float, float] = (0.001, 0.04),
        texture_dir: str | None = None,
    ) -> None:
        unknown = [k for k in (*kinds, *exclude) if k not in DEFECT_KINDS]
        if unknown:
            raise DataError(
                f"synthesis kind {unknown[0]!r} is unknown: use kinds of {', '.join(DEFECT_KINDS)}"
            )
        self.kinds = [k for k in kinds if k not in set(exclude)]
        if not self.kinds:
            raise DataError(f"synthesis.exclude={list(exclude)} leaves none of kinds={list(kinds)}")
        self.area = (float(area[0]), float(area[1]))
        self.textures = self._texture_files(texture_dir) if texture_dir else []

    @staticmethod
    def _texture_files(texture_dir: str) -> list[Path]:
        root = Path(texture_dir).expanduser()
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in TEXTURE_SUFFIXES)
        if not files:
            raise DataError(
                f"no texture images under {root}: set synthesis.texture_dir to a folder such as DTD"
            )
        return files

    def _donor(self, pool: np.ndarray, index: int, rng: np.random.Generator) -> np.ndarray:
        """Foreign texture for pool image ``index``: a user texture, or another pool image."""
        if self.textures:
            with Image.open(self.textures[int(rng.integers(len(self.textures)))]) as img:
                texture = torch.from_numpy(np.asarray(img.convert("RGB"), np.float32) / 255.0)
            resized = F.interpolate(texture.permute(2, 0, 1)[None], size=pool.shape[1:3], mode="bilinear",
                                    antialias=True)  # fmt: skip
            return resized[0].permute(1, 2, 0).numpy()
        other = (index + int(rng.integers(1, len(pool)))) % len(pool) if len(pool) > 1 else index
        return pool[other]

    def __call__(self, pool: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` anomalous variants of random pool images (N,3,H,W): images, (count,1,H,W) masks."""
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        images_np = pool.detach().float().cpu().permute(0, 2, 3, 1).contiguous().numpy()
        images, masks = [], []
        for _ in range(count):
            index = int(rng.integers(len(images_np)))
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
            donor = self._donor(images_np, index, rng)
            painted, mask = paint_float(images_np[index], kind, rng, donor, self.area)
            images.append(torch.from_numpy(painted).permute(2, 0, 1))
            masks.append(torch.from_numpy(mask)[None].float())
        return torch.stack(images).to(pool.device, pool.dtype), torch.stack(masks).to(pool.device)
