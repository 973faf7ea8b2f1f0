"""Synthetic anomalies with exact masks, painted on (pseudo-)normal images for test-time training.

``perlin``: a localised Perlin-noise mask (anomalib's generator) of a random area, either a blob
(high noise near a random centre) or a line (a band around a zero crossing of the noise), filled
with foreign texture: another image of the pool (flipped, rotated, rolled) or an image of a user
texture folder such as DTD, photometrically altered, then alpha-blended. ``cutpaste``: a
colour-jittered rectangle of the image pasted elsewhere on it. All randomness comes from torch's
global generator, so a seeded run is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from anomalib.data.utils.generators import generate_perlin_noise
from PIL import Image

from anorefine.errors import DataError

METHODS = ("perlin", "cutpaste")
TEXTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def uniform(low: float, high: float) -> float:
    """A float drawn uniformly from [low, high) by torch's global generator."""
    return low + (high - low) * float(torch.rand(()))


def randint(low: int, high: int) -> int:
    """An int drawn uniformly from [low, high] by torch's global generator."""
    return int(torch.randint(low, high + 1, ()))


def log_uniform(low: float, high: float) -> float:
    """A float whose logarithm is uniform in [log low, log high)."""
    return math.exp(uniform(math.log(low), math.log(high)))


def perlin_mask(height: int, width: int, area: float, line: bool) -> torch.Tensor:
    """(H,W) bool mask covering ``area`` of the image: a Perlin blob or line near a random centre.

    Pixels are ranked by ``window + noise`` (blob) or ``window - 4|noise|`` (line), where ``window`` is
    an elliptical Gaussian around the centre whose radius matches the area; the top ``area`` fraction
    is the mask, so its size is exact and its outline follows the noise.
    """
    radius = math.sqrt(area * height * width / math.pi)
    side = max(height, width)
    scale = 2 ** min(5, max(1, round(math.log2(side / (2 * radius)))))
    noise = generate_perlin_noise(height, width, scale=(scale, scale), device=torch.device("cpu"))
    cy, cx = uniform(0.15, 0.85) * height, uniform(0.15, 0.85) * width
    angle, aspect = uniform(0, math.pi), log_uniform(0.5, 2.0)
    yy, xx = torch.meshgrid(torch.arange(height) - cy, torch.arange(width) - cx, indexing="ij")
    u = (xx * math.cos(angle) + yy * math.sin(angle)) / (radius * math.sqrt(aspect))
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) * math.sqrt(aspect) / radius
    window = torch.exp(-(u**2 + v**2) / (8.0 if line else 2.0))
    score = window - 4.0 * noise.abs() if line else window + noise
    count = max(1, round(area * height * width))
    threshold = score.flatten().kthvalue(score.numel() - count + 1).values
    return score >= threshold


def photometric(texture: torch.Tensor) -> torch.Tensor:
    """One generic photometric change of a (3,H,W) texture in [0,1]: darken, brighten, invert,
    channel shuffle, contrast or posterise (the appearance of a foreign material)."""
    choice = randint(0, 5)
    if choice == 0:
        return texture * uniform(0.15, 0.6)
    if choice == 1:
        return texture + (1.0 - texture) * uniform(0.4, 0.85)
    if choice == 2:
        return 1.0 - texture
    if choice == 3:
        return texture[torch.randperm(3)]
    if choice == 4:
        mean = texture.mean()
        return ((texture - mean) * log_uniform(0.3, 3.0) + mean).clamp(0.0, 1.0)
    levels = 2 ** randint(1, 3)
    return torch.floor(texture * levels) / levels


def random_view(texture: torch.Tensor) -> torch.Tensor:
    """A flipped, rotated and rolled copy of a square (3,H,W) texture (misaligned with its source)."""
    texture = torch.rot90(texture, randint(0, 3), dims=(1, 2))
    if randint(0, 1):
        texture = texture.flip(2)
    return torch.roll(texture, (randint(0, texture.shape[1]), randint(0, texture.shape[2])), dims=(1, 2))


class AnomalySynthesizer:
    """Paints synthetic anomalies on a pool of images; returns the images and their exact masks."""

    def __init__(
        self,
        method: str = "perlin",
        area: tuple[float, float] = (0.002, 0.04),
        line_fraction: float = 0.3,
        blend: tuple[float, float] = (0.5, 1.0),
        texture_dir: str | None = None,
    ) -> None:
        if method not in METHODS:
            raise DataError(f"synthesis method {method!r} is unknown: use one of {METHODS}")
        self.method, self.area, self.line_fraction, self.blend = (
            method,
            tuple(area),
            line_fraction,
            tuple(blend),
        )
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

    def _texture(self, pool: torch.Tensor, index: int) -> torch.Tensor:
        """A foreign texture for image ``index`` of the pool: a user texture, or another pool image."""
        size = tuple(pool.shape[-2:])
        if self.textures:
            with Image.open(self.textures[randint(0, len(self.textures) - 1)]) as img:
                rgb = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8)
                texture = rgb.view(img.height, img.width, 3).permute(2, 0, 1).float() / 255.0
            return F.interpolate(texture[None], size=size, mode="bilinear", antialias=True)[0]
        other = (index + randint(1, len(pool) - 1)) % len(pool) if len(pool) > 1 else index
        return random_view(pool[other])

    def _perlin(self, pool: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = pool[index]
        height, width = image.shape[-2:]
        mask = perlin_mask(height, width, log_uniform(*self.area), line=uniform(0, 1) < self.line_fraction)
        fill = photometric(self._texture(pool, index).to(image.device))
        alpha = uniform(*self.blend) * mask.to(image.device, image.dtype)
        return image * (1 - alpha) + fill * alpha, mask

    def _cutpaste(self, pool: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = pool[index]
        height, width = image.shape[-2:]
        area, aspect = log_uniform(*self.area) * height * width, log_uniform(0.3, 3.3)
        h = max(1, min(height - 1, round(math.sqrt(area * aspect))))
        w = max(1, min(width - 1, round(math.sqrt(area / aspect))))
        sy, sx, ty, tx = (
            randint(0, height - h),
            randint(0, width - w),
            randint(0, height - h),
            randint(0, width - w),
        )
        patch = image[:, sy : sy + h, sx : sx + w]
        patch = ((patch - 0.5) * uniform(0.7, 1.3) + 0.5 + uniform(-0.15, 0.15)).clamp(0.0, 1.0)
        out = image.clone()
        out[:, ty : ty + h, tx : tx + w] = patch
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[ty : ty + h, tx : tx + w] = True
        return out, mask

    def __call__(self, pool: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` anomalous variants of random pool images (N,3,H,W): images, (count,1,H,W) masks."""
        paint = self._perlin if self.method == "perlin" else self._cutpaste
        images, masks = [], []
        for _ in range(count):
            image, mask = paint(pool, randint(0, len(pool) - 1))
            images.append(image.clamp(0.0, 1.0))
            masks.append(mask[None].float())
        return torch.stack(images), torch.stack(masks)


@dataclass
class SynthesisConfig:
    """Settings of the synthetic anomalies (``curriculum.synthesis`` of conf/curriculum/pgt.yaml)."""

    _target_: str = "anorefine.data.synthesis.AnomalySynthesizer"
    method: str = "perlin"
    area: tuple[float, float] = (0.002, 0.04)
    line_fraction: float = 0.3
    blend: tuple[float, float] = (0.5, 1.0)
    texture_dir: str | None = None
