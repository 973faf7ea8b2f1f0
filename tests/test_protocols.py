"""Each paper's own evaluation: the protocol presets, the scipy-equal blur border, the mask rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import compose_with
from PIL import Image
from scipy import ndimage

from anorefine.assembly import build_detector
from anorefine.data.dataset import resize_mask
from anorefine.detectors.base import BaselineBlur
from anorefine.refiners.base import base_map, baseline_map
from anorefine.refiners.separable import apply, blur_matrix


def test_the_symmetric_blur_equals_scipy_gaussian_filter_at_the_border() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 1, 70, 90, generator=generator, dtype=torch.float64) * 5
    ours = apply(maps, blur_matrix(70, 4.0, "symmetric"), blur_matrix(90, 4.0, "symmetric"))
    for i in range(2):
        expected = ndimage.gaussian_filter(maps[i, 0].numpy(), sigma=4, truncate=4, mode="reflect")
        assert np.abs(ours[i, 0].numpy() - expected).max() < 1e-6
    torch_reflect = baseline_map(maps.float()[:, :, ::2, ::2], (70, 90))  # anomalib's border, sigma 4
    border = (slice(None), slice(None), slice(0, 16))
    assert (
        torch_reflect[border]
        - baseline_map(maps.float()[:, :, ::2, ::2], (70, 90), BaselineBlur(padding="symmetric"))[border]
    ).abs().max() > 1e-4


def scratches(size: int) -> np.ndarray:
    """A 1-px diagonal scratch, a 2-px bar and a blob on a ``size``² mask."""
    mask = np.zeros((size, size), bool)
    idx = np.arange(size // 8, size // 2)
    mask[idx, idx] = True
    mask[size // 2 : size // 2 + 2, size // 8 : size // 2] = True
    yy, xx = np.mgrid[0:size, 0:size]
    mask[(yy - 3 * size // 4) ** 2 + (xx - 3 * size // 4) ** 2 < (size // 16) ** 2] = True
    return mask


@pytest.mark.parametrize(("rule", "keep"), [("above_half", lambda m: m > 0.5), ("full", lambda m: m == 1.0),
                                             ("nonzero", lambda m: m > 0)])  # fmt: skip
def test_each_mask_rule_equals_the_official_pipeline(rule: str, keep) -> None:
    """The official codes: torchvision Resize (bilinear, on the PIL mask), ToTensor, then the rule."""
    mask = scratches(1024)
    official = TF.to_tensor(TF.resize(Image.fromarray(mask.astype(np.uint8) * 255), [256, 256]))
    assert torch.equal(resize_mask(mask, 256, rule), keep(official).float())


def test_the_mask_rules_order_and_a_thin_scratch() -> None:
    mask = scratches(1024)
    full, half, nonzero = (resize_mask(mask, 256, r) for r in ("full", "above_half", "nonzero"))
    assert torch.all(full <= half) and torch.all(half <= nonzero) and full.sum() < half.sum() < nonzero.sum()
    thin = np.zeros((1024, 1024), bool)
    thin[np.arange(100, 600), np.arange(100, 600)] = True  # 1 px wide at 1024: a quarter pixel at 256
    assert resize_mask(thin, 256, "full").sum() == 0 and resize_mask(thin, 256, "nonzero").sum() > 0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], {"image_size": 256, "image_resize": "bilinear", "mask_resize": "nearest", "resolution": "input",
              "blur_padding": "reflect", "protocol": "default"}),
        (["protocol=mvtec"], {"resolution": "original", "protocol": "mvtec"}),
        (["protocol=anomalyclip"], {"image_size": 518, "image_resize": "bicubic", "mask_resize": "above_half",
                                    "blur_padding": "symmetric", "protocol": "anomalyclip"}),
        (["protocol=musc"], {"image_size": 518, "mask_resize": "full", "protocol": "musc"}),
        (["protocol=musc", "dataset=visa"], {"mask_resize": "nonzero"}),
        (["protocol=anomalib"], {"resolution": "input", "mask_resize": "nearest", "protocol": "anomalib"}),
    ],
)  # fmt: skip
def test_the_protocols_set_what_their_papers_do(overrides: list[str], expected: dict[str, object]) -> None:
    cfg = compose_with(overrides)
    found = {
        "image_size": cfg.dataset.image_size,
        "image_resize": str(cfg.dataset.image_resize.value),
        "mask_resize": str(cfg.dataset.mask_resize.value if hasattr(cfg.dataset.mask_resize, "value")
                           else cfg.dataset.mask_resize),
        "resolution": str(cfg.eval.resolution.value),
        "blur_padding": str(cfg.eval.blur_padding.value),
        "protocol": cfg.eval.protocol,
    }  # fmt: skip
    assert {k: found[k] for k in expected} == expected


@pytest.mark.parametrize(("overrides", "padding"), [([], "reflect"), (["protocol=anomalyclip"], "symmetric")])
def test_the_protocols_blur_border_reaches_the_detectors_base_map(overrides: list[str], padding: str) -> None:
    """The border is a str Enum in the config: the detector must receive its value, which the base
    map then applies (an enum's str() once sent every run to the default border)."""
    cfg = compose_with([*overrides, "model.weights=random", "dataset.image_size=64", "model.image_size=64"])
    detector = build_detector(cfg.model, cfg.eval.blur_padding, "brick", torch.device("cpu"))
    with torch.no_grad():
        detector.fit([{"image": torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))}])
        output = detector(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    assert output.baseline.padding == padding
    upsampled = torch.nn.functional.interpolate(output.anomaly_map, size=(64, 64), mode="bilinear")
    expected = ndimage.gaussian_filter(upsampled[0, 0].double().numpy(), sigma=4, truncate=4, mode="reflect")
    error = np.abs(base_map(output, (64, 64))[0, 0].double().numpy() - expected).max()
    assert (error < 1e-5) == (padding == "symmetric")
