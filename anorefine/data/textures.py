"""Normal textures for the generated datasets: scikit-image photographs and procedural materials.

``brick``, ``grass`` and ``gravel`` are the texture photographs scikit-image ships (grey, tinted);
``woven`` (a plain weave of jittered threads), ``carpet`` (a dense pile of band-limited noise) and
``wood`` (warped growth rings with fine grain) are drawn here from a seed, so every texture is
offline and deterministic. A normal image is a random crop of a texture with flips, rotation,
brightness/contrast jitter and sensor noise (``normal_image``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage

PHOTO_TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
PROCEDURAL_SIZE = 1024
IMAGE_SIZE, CROP = 256, 320
#: Colour of the grey photographs (the demo's look).
TINTS = {"brick": (1.0, 0.72, 0.58), "grass": (0.72, 1.0, 0.55), "gravel": (0.95, 0.9, 0.8)}


def _band_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]
) -> np.ndarray:
    """White noise low-passed by a Gaussian of ``sigma`` px, rescaled to zero mean and unit std."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (noise - noise.mean()) / max(float(noise.std()), 1e-6)


def _colourise(gray: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(H,W) intensities in about [0, 1] times an RGB colour -> (H,W,3) uint8."""
    return np.clip(np.rint(255.0 * gray[..., None] * colour), 0, 255).astype(np.uint8)


def woven(rng: np.random.Generator, size: int = PROCEDURAL_SIZE) -> np.ndarray:
    """Plain weave: warp and weft threads alternate over/under; each thread has its own shade."""
    period = rng.uniform(7.0, 10.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x = xx + 1.5 * _band_noise(rng, (size, size), 24.0)  # threads are never perfectly straight
    y = yy + 1.5 * _band_noise(rng, (size, size), 24.0)
    column, row = np.floor(x / period).astype(int), np.floor(y / period).astype(int)
    u, v = x / period - column, y / period - row
    columns, rows = column.max() + 2, row.max() + 2
    warp_shade = 1.0 + 0.06 * rng.standard_normal(columns)
    weft_shade = 1.0 + 0.06 * rng.standard_normal(rows)
    across_warp, across_weft = np.sin(np.pi * u) ** 0.6, np.sin(np.pi * v) ** 0.6
    fibre_warp = 0.05 * _band_noise(rng, (size, size), (6.0, 0.6))  # fibres run along each thread
    fibre_weft = 0.05 * _band_noise(rng, (size, size), (0.6, 6.0))
    warp = across_warp * (0.8 + 0.2 * np.sin(np.pi * v)) * warp_shade[column] + fibre_warp
    weft = across_weft * (0.8 + 0.2 * np.sin(np.pi * u)) * weft_shade[row] + fibre_weft
    warp_on_top = (column + row) % 2 == 0
    gray = 0.15 + 0.7 * np.where(warp_on_top, warp, weft)
    hue = rng.uniform(0.35, 1.0, 3)
    return _colourise(gray, (hue / hue.max()).astype(np.float32))


def carpet(rng: np.random.Generator, size: int = PROCEDURAL_SIZE) -> np.ndarray:
    """Dense pile: clumps (band-limited noise at two scales) over fine fibre speckle."""
    shape = (size, size)
    pile = 0.5 * _band_noise(rng, shape, 6.0) + 0.3 * _band_noise(rng, shape, 2.0)
    speckle = 0.35 * _band_noise(rng, shape, 0.7)
    gray = 0.5 + 0.12 * (pile + speckle)
    hue = rng.uniform(0.3, 1.0, 3)
    return _colourise(gray, (hue / hue.max()).astype(np.float32))


def wood(rng: np.random.Generator, size: int = PROCEDURAL_SIZE) -> np.ndarray:
    """Growth rings warped by low-frequency noise, with fine grain streaks along the rings."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    across = xx * np.cos(angle) + yy * np.sin(angle)
    rings = across / rng.uniform(14.0, 24.0) + 1.2 * _band_noise(rng, (size, size), 60.0)
    ring = 0.5 + 0.5 * np.sin(2 * np.pi * rings) ** 3
    grain = ndimage.rotate(_band_noise(rng, (size, size), (0.6, 12.0)), np.degrees(angle), reshape=False,
                           mode="wrap")  # fmt: skip
    gray = 0.45 + 0.25 * ring + 0.05 * grain
    return _colourise(gray, np.array([1.0, 0.68, 0.42], np.float32) * rng.uniform(0.85, 1.1))


PROCEDURAL_TEXTURES: dict[str, Callable[..., np.ndarray]] = {
    "woven": woven,
    "carpet": carpet,
    "wood": wood,
}
TEXTURES: tuple[str, ...] = (*PHOTO_TEXTURES, *PROCEDURAL_TEXTURES)


def load_texture(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(texture, tint): a scikit-image photograph (grey (H,W)) or a procedural RGB texture (H,W,3)."""
    if name in PHOTO_TEXTURES:
        return getattr(skimage.data, name)(), np.array(TINTS[name], np.float32)
    if name in PROCEDURAL_TEXTURES:
        rng = np.random.default_rng([seed, TEXTURES.index(name)])
        return PROCEDURAL_TEXTURES[name](rng), np.ones(3, np.float32)
    raise ValueError(f"unknown texture {name!r}: use one of {', '.join(TEXTURES)}")


def normal_image(texture: np.ndarray, tint: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 256×256 uint8 RGB crop of ``texture`` with flips, rotation, brightness/contrast jitter and noise."""
    y, x = rng.integers(0, np.array(texture.shape[:2]) - CROP + 1)
    crop = np.rot90(texture[y : y + CROP, x : x + CROP], int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    resized = Image.fromarray(np.ascontiguousarray(crop)).resize(
        (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR
    )
    pixels = np.asarray(resized, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    mean = pixels.mean()
    contrast, brightness = rng.uniform(0.9, 1.1), 255.0 * rng.uniform(-0.04, 0.04)
    pixels = (pixels - mean) * np.float32(contrast) + np.float32(mean + brightness)
    pixels += 2.55 * rng.standard_normal(pixels.shape, dtype=np.float32)
    return np.clip(np.rint(pixels * tint), 0, 255).astype(np.uint8)
