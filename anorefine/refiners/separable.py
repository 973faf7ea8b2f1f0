"""Separable linear maps of (B,1,H,W) maps, each held as one matrix per axis: ``rows @ map @ cols.T``.

Bilinear resizing, the baseline's Gaussian blur (either border convention) and F2PAD's
receptive-field pooling act on each axis independently, so each is an (out, in) matrix per axis,
and a chain of them is the product of its matrices. Applied this way, upsampling a 32² map to 256²
and blurring it costs two small matrix products instead of anomalib's 33×33 convolution over the
full map (GaussianBlur2d), and autograd through it is two more matrix products (F2PAD's
optimisation). Matrices are built once per shape in float64, and the small ones cached (a resize,
or a resize folded into a blur, is (out, in) with ``in`` the coarse grid; a full blur matrix is not
kept); the maps equal the convolution forms up to float32 rounding (tests). Cached matrices are
shared: never modify one in place.
"""

from __future__ import annotations

from functools import lru_cache
from typing import get_args

import torch
import torch.nn.functional as F

from anorefine.data.records import BlurPadding
from anorefine.shapes import spatial_size


def apply(maps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(..., h, w) -> (..., rows.shape[0], cols.shape[0]): ``rows @ maps @ cols.T`` in the maps' dtype."""
    rows = rows.to(device=maps.device, dtype=maps.dtype)
    cols = cols.to(device=maps.device, dtype=maps.dtype)
    return rows @ maps @ cols.T


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised float64 Gaussian taps of radius int(4σ + 0.5) (scipy's truncate=4, anomalib's size)."""
    radius = int(4.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    return kernel / kernel.sum()


def mirrored(index: torch.Tensor, length: int, padding: BlurPadding) -> torch.Tensor:
    """Source index of each (possibly out-of-range) ``index`` on an axis of ``length`` pixels."""
    if padding not in get_args(BlurPadding):
        raise ValueError(f"blur padding {padding!r} is unknown: use one of {get_args(BlurPadding)}")
    edge = 0 if padding == "reflect" else 1  # symmetric repeats the edge pixel
    index = torch.where(index < 0, -index - edge, index)
    return torch.where(index > length - 1, 2 * (length - 1) - index + edge, index)


def blur_matrix(length: int, sigma: float, padding: BlurPadding = "reflect") -> torch.Tensor:
    """(length, length) float64 Gaussian blur of one axis with mirrored borders (identity at σ <= 0)."""
    if sigma <= 0:
        return torch.eye(length, dtype=torch.float64)
    kernel = gaussian_kernel(sigma)
    radius = (kernel.numel() - 1) // 2
    limit = length - 1 if padding == "reflect" else length  # how far a single mirror reaches
    if radius > limit:
        raise ValueError(
            f"a {length}-pixel map is narrower than the blur radius {radius} (sigma {sigma}): "
            "use a larger image size or a smaller sigma"
        )
    outputs = torch.arange(length)[:, None].expand(length, kernel.numel())
    sources = mirrored(outputs + torch.arange(-radius, radius + 1)[None], length, padding)
    matrix = torch.zeros(length, length, dtype=torch.float64)
    return matrix.index_put_((outputs, sources), kernel.expand(length, -1), accumulate=True)


@lru_cache(maxsize=256)
def resize_matrix(source: int, target: int, align_corners: bool = False) -> torch.Tensor:
    """(target, source) float64 bilinear resize of one axis: torch's own linear interpolation of the
    identity, so it matches ``F.interpolate(mode="bilinear", antialias=False)`` by construction."""
    eye = torch.eye(source, dtype=torch.float64)[None]
    return F.interpolate(eye, size=target, mode="linear", align_corners=align_corners)[0].T.contiguous()


@lru_cache(maxsize=256)
def antialias_matrix(source: int, target: int, align_corners: bool = False) -> torch.Tensor:
    """(target, source) float64 antialiased bilinear resize of one axis: torch's own
    ``F.interpolate(mode="bilinear", antialias=True)`` of the identity along the width (that resize is
    separable), so it matches the 2-D call by construction; the ONNX export's form of it."""
    eye = torch.eye(source, dtype=torch.float64).view(source, 1, 1, source)
    resized = F.interpolate(eye, (1, target), mode="bilinear", antialias=True, align_corners=align_corners)
    return resized[:, 0, 0].T.contiguous()


@lru_cache(maxsize=256)
def smoothing_matrix(
    source: int, target: int, sigma: float, align_corners: bool, padding: BlurPadding
) -> torch.Tensor:
    """(target, source): bilinear resize to ``target`` pixels, then the Gaussian blur at that size."""
    return blur_matrix(target, sigma, padding) @ resize_matrix(source, target, align_corners)


def smooth(
    maps: torch.Tensor,
    size: tuple[int, int],
    sigma: float,
    align_corners: bool = False,
    padding: BlurPadding = "reflect",
) -> torch.Tensor:
    """(B,C,h,w) -> (B,C,*size): bilinear upsampling then the Gaussian blur, as two matrix products."""
    height, width = spatial_size(maps)  # ints, also while torch.onnx traces (the matrices are constants)
    rows = smoothing_matrix(height, size[0], float(sigma), align_corners, padding)
    cols = smoothing_matrix(width, size[1], float(sigma), align_corners, padding)
    return apply(maps, rows, cols)
