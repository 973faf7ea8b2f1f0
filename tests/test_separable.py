"""Axis matrices: the same maps as anomalib's blur, torch's interpolation and scipy's filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from anomalib.models.components import GaussianBlur2d
from scipy import ndimage

from anorefine.detectors.base import BaselineBlur
from anorefine.refiners import separable
from anorefine.refiners.base import baseline_map


@pytest.mark.parametrize(
    ("grid", "size", "align_corners"), [(32, 256, False), (37, 518, True), (12, (96, 70), False)]
)
def test_baseline_map_equals_anomalibs_interpolate_then_gaussian_blur(grid, size, align_corners) -> None:
    size = size if isinstance(size, tuple) else (size, size)
    coarse = torch.rand(3, 1, grid, grid + 3, generator=torch.Generator().manual_seed(0)) * 5
    upsampled = F.interpolate(coarse, size=size, mode="bilinear", align_corners=align_corners)
    expected = GaussianBlur2d(sigma=(4.0, 4.0), channels=1, kernel_size=(33, 33))(upsampled)
    ours = baseline_map(coarse, size, BaselineBlur(4.0, align_corners))
    assert ours.shape == expected.shape and ours.dtype == torch.float32
    assert (ours - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize(
    ("source", "target", "align_corners"), [(7, 7, False), (5, 23, False), (16, 9, True)]
)
def test_resize_matrix_is_torchs_bilinear_interpolation(source, target, align_corners) -> None:
    maps = torch.rand(
        2, 1, source, source + 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    expected = F.interpolate(maps, size=(target, target + 2), mode="bilinear", align_corners=align_corners)
    rows = separable.resize_matrix(source, target, align_corners)
    cols = separable.resize_matrix(source + 4, target + 2, align_corners)
    assert torch.allclose(separable.apply(maps, rows, cols), expected, atol=1e-12)


@pytest.mark.parametrize(
    ("source", "target", "align_corners"),
    [(128, 64, False), (100, 37, False), (96, 40, True), (64, 64, False)],
)
def test_antialias_matrix_is_torchs_antialiased_bilinear_resize(source, target, align_corners) -> None:
    maps = torch.rand(
        2, 3, source, source + 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    expected = F.interpolate(
        maps, size=(target, target + 3), mode="bilinear", antialias=True, align_corners=align_corners
    )
    rows = separable.antialias_matrix(source, target, align_corners)
    cols = separable.antialias_matrix(source + 6, target + 3, align_corners)
    assert torch.allclose(separable.apply(maps, rows, cols), expected, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.6, 2.0, 4.0])
def test_both_blur_borders_equal_their_definitions(sigma: float) -> None:
    maps = torch.rand(2, 1, 40, 50, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    symmetric = separable.apply(
        maps, separable.blur_matrix(40, sigma, "symmetric"), separable.blur_matrix(50, sigma, "symmetric")
    )
    reflect = separable.apply(
        maps, separable.blur_matrix(40, sigma, "reflect"), separable.blur_matrix(50, sigma, "reflect")
    )
    kernel = separable.gaussian_kernel(sigma)
    radius = (kernel.numel() - 1) // 2
    padded = F.pad(maps, (radius,) * 4, mode="reflect")  # torch reflect: the edge pixel not repeated
    torch_reflect = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    assert torch.allclose(reflect, torch_reflect, atol=1e-12)
    for i in range(2):
        scipy = ndimage.gaussian_filter(maps[i, 0].numpy(), sigma=sigma, truncate=4, mode="reflect")
        assert np.abs(symmetric[i, 0].numpy() - scipy).max() < 1e-12
    assert (symmetric - reflect)[..., :radius].abs().max() > 1e-4  # the borders do differ


def test_rows_of_a_blur_sum_to_one_and_a_narrow_map_is_refused() -> None:
    matrix = separable.blur_matrix(20, 4.0, "reflect")
    assert torch.allclose(matrix.sum(1), torch.ones(20, dtype=torch.float64), atol=1e-12)
    assert torch.equal(separable.blur_matrix(9, 0.0), torch.eye(9, dtype=torch.float64))
    with pytest.raises(ValueError, match="narrower than the blur radius 16"):
        separable.blur_matrix(16, 4.0, "reflect")
    with pytest.raises(ValueError, match="unknown"):
        separable.blur_matrix(40, 4.0, "wrap")  # type: ignore[arg-type]
