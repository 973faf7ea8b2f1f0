"""Tests of anorefine.metrics.bootstrap against a direct resampling loop (expand the drawn images,
recompute the metrics), plus the properties of the intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from anorefine.errors import MetricError
from anorefine.metrics import (
    BootstrapSettings,
    DeltaInterval,
    DeltaReplicates,
    RegionLayout,
    bin_maps,
    category_seed,
    delta_intervals,
    image_metrics,
    interval,
    pixel_metrics,
    replicate_metrics,
    resample_counts,
    size_metrics,
)

PIXEL = ("pixel_auroc", "pixel_ap", "aupro")
IMAGE = ("image_auroc", "image_ap")
# two parts of different sizes: 7 images of 40x40 and 5 of 32x32 (1 px = 0.06 % and 0.098 %)
PART_SHAPES = [(7, 40), (5, 32)]
KINDS = ["good", "a", "b", "a", "good", "b", "a", "good", "a", "b", "good", "b"]


def make_parts(seed: int, step: float | None) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Base maps, refined maps (base plus more signal on the defects) and masks, per part.

    Defective images hold a 1-pixel (small), a 3-pixel (medium) and a rectangular region (mostly large).
    ``step``: round the scores to multiples of it (few distinct values), or keep them continuous.
    """
    rng = np.random.default_rng(seed)
    base, refined, masks = [], [], []
    index = 0
    for count, size in PART_SHAPES:
        mask = np.zeros((count, size, size), dtype=bool)
        for image in range(count):
            if KINDS[index + image] != "good":
                top, left = rng.integers(2, size - 12, size=2)
                height, width = rng.integers(2, 10, size=2)
                mask[image, top : top + height, left : left + width] = True
                mask[image, 0, 0] = True
                mask[image, size - 1, size - 3 :] = True
        index += count
        noise = rng.normal(size=mask.shape)
        base_map = noise + 1.2 * mask * rng.random(mask.shape)
        refined_map = base_map + 0.8 * mask * rng.random(mask.shape) - 0.3 * (~mask) * rng.random(mask.shape)
        if step is not None:
            base_map, refined_map = np.round(base_map / step) * step, np.round(refined_map / step) * step
        base.append(base_map.astype(np.float32))
        refined.append(refined_map.astype(np.float32))
        masks.append(mask)
    return base, refined, masks


def tensors(parts: list[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(part) for part in parts]


def image_scores(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([part.reshape(len(part), -1).max(1) for part in parts])


def labels_of(masks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([mask.reshape(len(mask), -1).any(1) for mask in masks])


def expand(parts: list[np.ndarray], counts: np.ndarray) -> list[torch.Tensor]:
    """Each image repeated as often as it was drawn (parts without a drawn image dropped)."""
    expanded, start = [], 0
    for part in parts:
        repeats = np.repeat(np.arange(len(part)), counts[start : start + len(part)])
        start += len(part)
        if repeats.size:
            expanded.append(torch.from_numpy(part[repeats]))
    return expanded


def direct_deltas(
    base: list[np.ndarray], refined: list[np.ndarray], masks: list[np.ndarray], counts: np.ndarray
) -> dict[str, dict[str, np.ndarray]]:
    """The replicate Δs of every view by the obvious loop: expand, recompute with the engine."""
    scores = {"base": image_scores(base), "refined": image_scores(refined)}
    labels = labels_of(masks)
    kinds = np.array(KINDS)
    views = {"all": np.ones(len(KINDS), dtype=bool)} | {
        f"kind/{k}": (kinds == "good") | (kinds == k) for k in "ab"
    }
    deltas: dict[str, dict[str, np.ndarray]] = {}
    for view in [*views, "size/small", "size/medium", "size/large"]:
        deltas[view] = {name: np.full(len(counts), np.nan) for name in PIXEL + IMAGE}
    for replicate, drawn in enumerate(counts):
        for view, selected in views.items():
            view_counts = drawn * selected
            view_masks = expand(masks, view_counts)
            values = {}
            for name, maps in (("base", base), ("refined", refined)):
                if any(bool(mask.any()) for mask in view_masks):
                    values[name] = pixel_metrics(expand(maps, view_counts), view_masks).values()
                else:
                    values[name] = dict.fromkeys(PIXEL)
                repeats = np.repeat(np.arange(len(KINDS)), view_counts)
                auroc, ap = image_metrics(
                    torch.from_numpy(scores[name][repeats]), torch.from_numpy(labels[repeats])
                )
                values[name].update(image_auroc=auroc, image_ap=ap)
            for metric in PIXEL + IMAGE:
                if values["base"][metric] is not None:
                    deltas[view][metric][replicate] = values["refined"][metric] - values["base"][metric]
        by_size = {
            name: size_metrics(expand(maps, drawn), expand(masks, drawn))
            for name, maps in (("base", base), ("refined", refined))
        }
        for key in ("small", "medium", "large"):
            for metric in PIXEL:
                if by_size["base"][key][metric] is not None:
                    deltas[f"size/{key}"][metric][replicate] = (
                        by_size["refined"][key][metric] - by_size["base"][key][metric]
                    )
    for key in ("small", "medium", "large"):
        for metric in IMAGE:
            del deltas[f"size/{key}"][metric]
    return deltas


def run_bootstrap(
    base: list[np.ndarray],
    refined: list[np.ndarray],
    masks: list[np.ndarray],
    replicates: int,
    seed: int = 0,
    level: float = 0.95,
    **kwargs: int,
) -> DeltaReplicates:
    return delta_intervals(
        tensors(base),
        tensors(refined),
        tensors(masks),
        image_scores(base),
        image_scores(refined),
        labels_of(masks),
        kinds=KINDS,
        settings=BootstrapSettings(replicates, level, seed),
        **kwargs,
    )


def test_few_distinct_values_equal_a_direct_resampling_loop() -> None:
    base, refined, masks = make_parts(0, step=0.5)
    layout = RegionLayout.from_masks(tensors(masks))
    assert bin_maps(tensors(base), layout).exact and bin_maps(tensors(refined), layout).exact
    result = run_bootstrap(base, refined, masks, replicates=25, seed=3)
    expected = direct_deltas(base, refined, masks, resample_counts(len(KINDS), 25, seed=3))
    assert set(result.views) == set(expected)
    intervals = result.intervals()
    for view, metrics in expected.items():
        assert set(result.views[view]) == set(metrics), view
        for name, deltas in metrics.items():
            np.testing.assert_allclose(
                result.views[view][name], deltas, rtol=0, atol=1e-9, err_msg=f"{view} {name}"
            )
            finite = deltas[~np.isnan(deltas)]
            low, high = np.percentile(finite, [2.5, 97.5])
            assert intervals[view][name].low == pytest.approx(low, abs=1e-9)
            assert intervals[view][name].high == pytest.approx(high, abs=1e-9)
            assert intervals[view][name].replicates == finite.size
    # a kind view's replicate is NaN only when it drew none of that kind's images: rare here
    assert np.isnan(result.views["kind/a"]["pixel_ap"]).sum() < 10


def smooth_case(seed: int, count: int = 16, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Continuous smooth maps (float32, nearly all scores distinct) with 1-3 rectangles in 3 of 4 images:
    more defect pixels than half the bins, like real maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), dtype=bool)
    for index in range(count):
        if index % 4:
            for _ in range(rng.integers(1, 4)):
                top, left = rng.integers(0, size - 30, size=2)
                height, width = rng.integers(3, 30, size=2)
                masks[index, top : top + height, left : left + width] = True
    noise = ndimage.gaussian_filter(rng.normal(size=masks.shape), (0, 2, 2)) * 3
    signal = ndimage.gaussian_filter(masks.astype(float), (0, 2, 2)) * rng.random(masks.shape)
    return (noise + 1.5 * signal).astype(np.float32), masks


@pytest.mark.parametrize("seed", [0, 1])
def test_continuous_scores_are_close_to_the_exact_metrics(seed: int) -> None:
    maps, masks = smooth_case(seed)
    binned = bin_maps([torch.from_numpy(maps)], RegionLayout.from_masks([torch.from_numpy(masks)]))
    assert not binned.exact and binned.normal_above.shape[1] > 4000  # about 147 300 distinct scores
    assert masks.sum() > 4096
    counts = resample_counts(len(maps), 5, seed=0)
    values = replicate_metrics(binned, counts)
    for replicate, drawn in enumerate(counts):
        images = np.repeat(np.arange(len(maps)), drawn)
        exact = pixel_metrics([torch.from_numpy(maps[images])], [torch.from_numpy(masks[images])])
        for name in PIXEL:
            # stated tolerance of 4096 bins on continuous maps: 1e-3 (observed: AP 1.5e-4, AUROC/AUPRO 6e-5)
            assert values[name][replicate] == pytest.approx(getattr(exact, name), abs=1e-3), name


def test_identical_maps_give_zero_deltas() -> None:
    base, _, masks = make_parts(2, step=None)
    result = run_bootstrap(base, base, masks, replicates=50)
    for view, metrics in result.views.items():
        for name, deltas in metrics.items():
            defined = deltas[~np.isnan(deltas)]
            assert defined.size > 0 and np.all(defined == 0.0), (view, name)
            record = result.intervals()[view][name]
            assert (record.low, record.high, record.contains_zero) == (0.0, 0.0, True)


def test_strictly_better_refined_maps_give_an_interval_above_zero() -> None:
    base, _, masks = make_parts(3, step=None)
    better = [maps + 3.0 * mask for maps, mask in zip(base, masks, strict=True)]
    intervals = run_bootstrap(base, better, masks, replicates=200).intervals()
    for view in ("all", "kind/a", "kind/b", "size/small", "size/medium", "size/large"):
        for name in PIXEL:
            assert intervals[view][name].low > 0.0, (view, name)
            assert not intervals[view][name].contains_zero


def test_same_seed_same_deltas_other_seed_other_deltas() -> None:
    base, refined, masks = make_parts(4, step=None)
    first = run_bootstrap(base, refined, masks, replicates=30, seed=7, bins=256)
    again = run_bootstrap(base, refined, masks, replicates=30, seed=7, bins=256)
    other = run_bootstrap(base, refined, masks, replicates=30, seed=8, bins=256)
    for view, metrics in first.views.items():
        for name, deltas in metrics.items():
            np.testing.assert_array_equal(deltas, again.views[view][name])
            assert not np.allclose(deltas, other.views[view][name], equal_nan=True), (view, name)


def test_resample_counts() -> None:
    counts = resample_counts(12, 500, seed=5)
    assert counts.shape == (500, 12)
    assert np.all(counts.sum(1) == 12)
    expected = np.random.default_rng(5).multinomial(12, np.full(12, 1 / 12), size=500)
    np.testing.assert_array_equal(counts, expected)
    assert counts.mean() == pytest.approx(1.0, abs=0.05)
    assert category_seed(0, "bottle") == category_seed(0, "bottle")
    assert len({category_seed(seed, name) for seed in (0, 1) for name in ("bottle", "cable", "grid")}) == 6


def test_interval_and_record() -> None:
    deltas = np.concatenate([np.arange(101.0), [np.nan, np.nan]])
    assert interval(deltas) == pytest.approx((2.5, 97.5))
    assert interval(deltas, level=0.9) == pytest.approx((5.0, 95.0))
    assert all(np.isnan(interval(np.full(4, np.nan))))
    record = DeltaInterval.from_deltas(deltas - 50.0)
    assert record.as_dict() == pytest.approx(
        {"low": -47.5, "high": 47.5, "level": 0.95, "replicates": 101, "contains_zero": True}
    )
    assert not DeltaInterval.from_deltas(deltas + 1.0).contains_zero
    with pytest.raises(MetricError, match="level"):
        interval(deltas, level=1.0)


def test_malformed_inputs_raise() -> None:
    base, refined, masks = make_parts(5, step=0.5)
    layout = RegionLayout.from_masks(tensors(masks))
    binned = bin_maps(tensors(base), layout)
    with pytest.raises(MetricError, match="counts"):
        replicate_metrics(binned, np.ones((3, 5), dtype=np.int64))
    with pytest.raises(MetricError, match="shapes"):
        bin_maps(tensors(base[::-1]), layout)
    with pytest.raises(MetricError, match="no ground-truth"):
        run_bootstrap(base, refined, [np.zeros_like(mask) for mask in masks], replicates=5)
