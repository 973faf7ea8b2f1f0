"""Tests of anorefine.metrics.breakdown: per size bin against a per-component loop, per kind against
compute_metrics on the hand-selected images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from anorefine.errors import MetricError
from anorefine.metrics import METRIC_KEYS, SIZE_BINS, compute_metrics, kind_metrics, size_metrics
from anorefine.metrics.breakdown import size_bin_index
from anorefine.metrics.references import aupro_mvtec, label_image, trapezoid_area

TOL = 1e-6
# the bins of the definition, written out: share of the image's pixels, low <= share < high
BINS = {"small": (0.0, 0.001), "medium": (0.001, 0.01), "large": (0.01, 1.0)}
CELL = 16  # regions are drawn in separate 16x16 cells, so two regions never touch


def region_pixels(count: int) -> list[tuple[int, int]]:
    """``count`` 4-connected pixels filled row by row, at most 12 per row (inside a cell's margin)."""
    width = min(12, int(np.ceil(np.sqrt(count))))
    return [(index // width, index % width) for index in range(count)]


def sized_regions_case(
    seed: int, count: int, size: int, region_sizes: list[int], levels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Maps and masks where each defective image has 1-4 regions of the given pixel counts, one per
    cell; the first image also has a 2-pixel region of two diagonal neighbours (one 8-connected region)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), dtype=bool)
    cells = [(row, col) for row in range(0, size - CELL + 1, CELL) for col in range(0, size - CELL + 1, CELL)]
    for index in range(count):
        if index % 3 == 2:  # every third image is normal
            continue
        chosen = rng.choice(len(cells), size=int(rng.integers(1, 5)), replace=False)
        for cell in chosen:
            top, left = cells[cell]
            for row, col in region_pixels(int(rng.choice(region_sizes))):
                masks[index, top + 1 + row, left + 1 + col] = True
    free = next(
        cell for cell in cells if not masks[0, cell[0] : cell[0] + CELL, cell[1] : cell[1] + CELL].any()
    )
    masks[0, free[0] + 3, free[1] + 3] = masks[0, free[0] + 4, free[1] + 4] = True
    maps = rng.normal(size=masks.shape) + 1.5 * masks * rng.random(masks.shape)
    if levels is not None:
        maps = np.round(maps * levels / 4) / (levels / 4)
    return maps.astype(np.float32), masks


def aupro_of_regions(normal: np.ndarray, regions: list[np.ndarray], limit: float = 0.3) -> float:
    """AUPRO from the definition: thresholds at the distinct scores, FPR over ``normal``, PRO the mean
    over ``regions`` (each an array of its pixels' scores) of the fraction at or above the threshold."""
    scores = np.concatenate([normal, *regions])
    fp_change = np.concatenate([np.ones(normal.size), np.zeros(scores.size - normal.size)])
    pro_change = np.concatenate(
        [np.zeros(normal.size)] + [np.full(r.size, 1 / (r.size * len(regions))) for r in regions]
    )
    order = np.argsort(scores, kind="stable")[::-1]
    tie_end = np.append(np.diff(scores[order]) != 0, True)
    fprs = np.concatenate([[0.0], (np.cumsum(fp_change[order]) / normal.size)[tie_end]])
    pros = np.concatenate([[0.0], np.cumsum(pro_change[order])[tie_end]])
    return trapezoid_area(fprs, pros, limit) / limit


def components(
    parts: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, list[tuple[float, np.ndarray]]]:
    """All normal pixel scores, and (area share, pixel scores) of every 8-connected region of every image."""
    normal, regions = [], []
    for maps, masks in parts:
        for image, mask in zip(maps, masks, strict=True):
            labels, count = label_image(mask)
            normal.append(image[labels == 0])
            for region in range(1, count + 1):
                inside = labels == region
                regions.append((inside.sum() / mask.size, image[inside]))
    return np.concatenate(normal), regions


def size_reference(parts: list[tuple[np.ndarray, np.ndarray]], limit: float = 0.3) -> dict[str, dict]:
    """Per bin: counts, sklearn AUROC/AP over all normal pixels plus the bin's region pixels, AUPRO."""
    normal, regions = components(parts)
    results = {}
    for key, (low, high) in BINS.items():
        chosen = [
            scores for share, scores in regions if low <= share < high or (high == 1.0 and share == 1.0)
        ]
        result = {"regions": len(chosen), "pixels": sum(scores.size for scores in chosen)}
        if chosen:
            scores = np.concatenate([normal, *chosen])
            truth = np.arange(scores.size) >= normal.size
            result["pixel_auroc"] = roc_auc_score(truth, scores)
            result["pixel_ap"] = average_precision_score(truth, scores)
            result["aupro"] = aupro_of_regions(normal, chosen, limit)
        else:
            result.update(pixel_auroc=None, pixel_ap=None, aupro=None)
        results[key] = result
    return results


def as_parts(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [torch.from_numpy(maps) for maps, _ in parts], [torch.from_numpy(masks) for _, masks in parts]


def assert_bins_equal(result: dict[str, dict], expected: dict[str, dict]) -> None:
    assert set(result) == set(expected)
    for key, values in expected.items():
        assert result[key]["regions"] == values["regions"], key
        assert result[key]["pixels"] == values["pixels"], key
        for name in ("pixel_auroc", "pixel_ap", "aupro"):
            if values[name] is None:
                assert result[key][name] is None, (key, name)
            else:
                assert result[key][name] == pytest.approx(values[name], abs=TOL), (key, name)


# 64x64: 4 px is 0.098 % (small), 5 px 0.12 % (medium), 40 px 0.98 % (medium), 41 px 1.0 % (large);
# 80x80: 6 px is 0.094 % (small), 7 px medium, 63 px medium, 64 px exactly 1 % (large)
PARTS_SIZES = [(6, 64, [1, 3, 4, 5, 12, 40, 41, 90, 144]), (4, 80, [2, 6, 7, 30, 63, 64, 120])]


@pytest.mark.parametrize("levels", [None, 6])
def test_size_bins_match_per_component_loop(levels: int | None) -> None:
    parts = [
        sized_regions_case(seed, count, size, sizes, levels)
        for seed, (count, size, sizes) in enumerate(PARTS_SIZES)
    ]
    expected = size_reference(parts)
    assert all(values["regions"] >= 3 for values in expected.values())  # every bin is exercised
    assert_bins_equal(size_metrics(*as_parts(parts)), expected)


def test_reference_aupro_over_all_regions_is_mvtec_aupro() -> None:
    parts = [sized_regions_case(0, 6, 64, PARTS_SIZES[0][2])]
    normal, regions = components(parts)
    maps, masks = parts[0]
    assert aupro_of_regions(normal, [scores for _, scores in regions]) == pytest.approx(
        aupro_mvtec(maps, masks), abs=1e-9
    )


def test_boundary_sizes_fall_in_the_right_bins() -> None:
    masks = np.zeros((2, 64, 64), dtype=bool)
    for cell, count in enumerate([4, 5, 40, 41]):
        for row, col in region_pixels(count):
            masks[0, 1 + row, 1 + CELL * cell + col] = True
    masks[1, 20:30, 20:30] = True
    maps = np.random.default_rng(0).normal(size=masks.shape).astype(np.float32)
    result = size_metrics([torch.from_numpy(maps)], [torch.from_numpy(masks)])
    assert {key: (values["regions"], values["pixels"]) for key, values in result.items()} == {
        "small": (1, 4),
        "medium": (2, 45),
        "large": (2, 141),
    }
    shares = np.array([0.0, 0.000999, 0.001, 0.00999, 0.01, 0.5, 1.0])
    assert size_bin_index(shares).tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert [size_bin.key for size_bin in SIZE_BINS] == list(BINS)


def test_bin_without_regions_is_none() -> None:
    parts = [sized_regions_case(3, 5, 64, [60, 100])]
    result = size_metrics(*as_parts(parts))
    assert result["medium"] == {
        "regions": 0,
        "pixels": 0,
        "pixel_auroc": None,
        "pixel_ap": None,
        "aupro": None,
    }
    assert result["small"]["regions"] == 1  # the diagonal pair of the first image
    assert_bins_equal(result, size_reference(parts))


def test_size_metrics_aupro_limit() -> None:
    parts = [sized_regions_case(4, 6, 64, PARTS_SIZES[0][2])]
    assert_bins_equal(size_metrics(*as_parts(parts), aupro_limit=0.05), size_reference(parts, limit=0.05))
    with pytest.raises(MetricError, match="aupro_limit"):
        size_metrics(*as_parts(parts), aupro_limit=1.5)


KINDS = ["good", "scratch", "good", "crack", "scratch", "good", "crack", "crack", "scratch", "hole"]


def kind_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    maps, masks = sized_regions_case(5, len(KINDS), 48, [3, 10, 50])
    good = np.array([kind == "good" for kind in KINDS])
    masks[good] = False
    masks[~good, 0:3, 0:3] = True  # every defective image has a region
    scores = np.random.default_rng(1).normal(size=len(KINDS)) + ~good
    return maps, masks, scores, ~good


def split(values: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(values[:6]), torch.from_numpy(values[6:])]


def test_kind_metrics_equal_compute_metrics_on_the_selected_images() -> None:
    maps, masks, scores, labels = kind_case()
    result = kind_metrics(
        split(maps), split(masks), torch.from_numpy(scores), torch.from_numpy(labels), KINDS
    )
    assert list(result) == ["crack", "hole", "scratch"]
    for kind, metrics in result.items():
        selected = [index for index, value in enumerate(KINDS) if value in ("good", kind)]
        expected = compute_metrics(maps[selected], masks[selected], scores[selected], labels[selected])
        assert set(metrics) == set(METRIC_KEYS)
        for name in METRIC_KEYS:
            assert metrics[name] == pytest.approx(expected[name], abs=1e-12), (kind, name)
        assert metrics["image_auroc"] is not None


def test_kind_without_good_images_uses_its_images_alone() -> None:
    maps, masks, scores, labels = kind_case()
    defective = np.flatnonzero(labels)
    kinds = [KINDS[index] for index in defective]
    result = kind_metrics(
        [torch.from_numpy(maps[defective])],
        [torch.from_numpy(masks[defective])],
        torch.from_numpy(scores[defective]),
        torch.from_numpy(labels[defective]),
        kinds,
    )
    selected = [index for index in defective if KINDS[index] == "crack"]
    expected = compute_metrics(maps[selected], masks[selected], scores[selected], labels[selected])
    assert result["crack"]["image_auroc"] is None
    assert result["crack"] == pytest.approx(expected, abs=1e-12)


def test_kind_metrics_without_masks() -> None:
    maps, _, scores, labels = kind_case()
    result = kind_metrics(split(maps), None, torch.from_numpy(scores), torch.from_numpy(labels), KINDS)
    selected = [index for index, value in enumerate(KINDS) if value in ("good", "hole")]
    assert result["hole"]["image_auroc"] == pytest.approx(roc_auc_score(labels[selected], scores[selected]))
    assert all(value is None for name, value in result["hole"].items() if not name.startswith("image_"))
    with pytest.raises(MetricError, match="kinds"):
        kind_metrics(split(maps), None, torch.from_numpy(scores), torch.from_numpy(labels), KINDS[:-1])
