"""Label-free thresholds: the global rules against numpy, MEBin against an OpenCV run of its steps."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from scipy import ndimage

from anorefine.errors import AnorefineError, MetricError
from anorefine.inspection import NormalScores
from anorefine.metrics.thresholds import (
    choose_threshold,
    mebin_masks,
    mebin_search_range,
    mebin_threshold,
    stable_interval,
)


def normal_maps(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.gamma(2.0, size=shape).astype(np.float32) for shape in ((8, 8), (5, 12), (16, 3))]


@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.99, 1.0])
def test_quantile_is_that_of_the_pooled_normal_values(quantile: float) -> None:
    maps = normal_maps(0)
    pooled = np.concatenate([m.ravel() for m in maps])
    assert choose_threshold("quantile", maps, quantile=quantile) == pytest.approx(
        np.quantile(pooled, quantile)
    )
    scores = np.array([m.max() for m in maps])
    assert choose_threshold("quantile", scores, quantile=quantile) == pytest.approx(
        np.quantile(scores, quantile)
    )


def test_quantile_one_marks_no_normal_value() -> None:
    maps = normal_maps(1)
    threshold = choose_threshold("quantile", maps, quantile=1.0)
    assert not any((m > threshold).any() for m in maps)


@pytest.mark.parametrize("k", [0.0, 1.0, 3.0])
def test_mean_std_is_mean_plus_k_population_sigma(k: float) -> None:
    maps = normal_maps(2)
    pooled = np.concatenate([m.ravel() for m in maps]).astype(np.float64)
    expected = pooled.mean() + k * pooled.std()
    assert choose_threshold("mean_std", maps, k=k) == pytest.approx(expected, rel=1e-12)


def test_predict_mode_thresholds_are_the_quantile_rule() -> None:
    collector = NormalScores()
    maps = normal_maps(3)
    collector.pixels = [m.ravel() for m in maps]
    collector.scores = [float(m.max()) for m in maps]
    thresholds = collector.thresholds(image_quantile=0.9, pixel_quantile=0.99)
    assert thresholds.image == choose_threshold("quantile", collector.scores, quantile=0.9)
    assert thresholds.pixel == choose_threshold("quantile", maps, quantile=0.99)


@pytest.mark.parametrize(
    ("rule", "values", "settings", "error", "message"),
    [
        ("mebin", [np.ones(3)], {}, AnorefineError, "rule='mebin' sets no global threshold"),
        ("none", [np.ones(3)], {}, AnorefineError, "sets no global threshold"),
        ("quantile", [np.ones(3)], {"quantile": 1.5}, AnorefineError, r"quantile=1.5 must lie in \[0, 1\]"),
        ("mean_std", [np.ones(3)], {"k": -1.0}, AnorefineError, "k=-1.0 must be a number, 0 or more"),
        ("mean_std", [np.ones(3)], {"k": float("nan")}, AnorefineError, "k=nan"),
        ("quantile", [np.zeros((0, 4))], {}, MetricError, "no normal values"),
        ("mean_std", [np.array([1.0, np.nan])], {}, MetricError, "NaN or infinity"),
    ],
)
def test_bad_rules_settings_and_values_are_one_line_errors(
    rule: str, values: list[np.ndarray], settings: dict[str, float], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        choose_threshold(rule, values, **settings)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([0, 0, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1], (12, 2)),  # the longest run wins
        ([2, 2, 2, 2, 0, 1, 1, 1, 1], (3, 2)),  # equal lengths: the count met first (higher thresholds)
        ([2, 2, 2, 2, 1, 2, 2, 2, 2], (8, 2)),  # the same count twice: the later, lower run
        ([1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0], None),  # zero counts are no interval; others too short
        ([], None),
    ],
)
def test_stable_interval(counts: list[int], expected: tuple[int, int] | None) -> None:
    assert stable_interval(counts, min_interval_len=4) == expected


def plateau_by_groups(counts: list[int], min_length: int) -> tuple[int, int] | None:
    """The reference's choice, restated with itertools.groupby and an explicit ranking."""
    runs, index = [], 0
    for count, group in itertools.groupby(counts):
        length = len(list(group))
        if count and length >= min_length:
            runs.append((count, index, index + length - 1))
        index += length
    if not runs:
        return None
    longest = {count: max(e - s for c, s, e in runs if c == count) for count, _, _ in runs}
    best = max(longest.values())
    winner = next(count for count, _, _ in runs if longest[count] == best)  # its first run came first
    end = max(e for c, s, e in runs if c == winner and e - s == best)
    return end, winner


def test_stable_interval_matches_a_groupby_restatement() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        counts = rng.integers(0, 4, size=rng.integers(1, 40)).repeat(rng.integers(1, 7)).tolist()
        assert stable_interval(counts, 4) == plateau_by_groups(counts, 4)


def bumps(size: int, centres: list[tuple[int, int, float]], seed: int) -> np.ndarray:
    """Low noise with a Gaussian bump of the given height at each centre."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    values = 0.05 * rng.random((size, size))
    for row, col, height in centres:
        values += height * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * 4.0**2))
    return values


def reference_masks(maps: list[np.ndarray], sample_rate: int = 4, min_length: int = 4) -> list[np.ndarray]:
    """MEBin's steps as the authors' code runs them (normalise to 0..255, OpenCV erosion and 8-connected
    components), with the float threshold mapped back instead of its integer truncation."""
    peaks = [m.max() for m in maps]
    low, high = min(peaks), max(peaks)
    kernel = np.ones((6, 6), np.uint8)
    masks = []
    for values in maps:
        scaled = np.where(values < low, 0, (values - low) / (high - low) * 255)
        counts = []
        for score in range(255, 0, -sample_rate):
            eroded = cv2.erode((scaled > score).astype(np.uint8) * 255, kernel, iterations=1)
            counts.append(cv2.connectedComponentsWithStats(eroded, connectivity=8)[0] - 1)
        chosen = plateau_by_groups(counts, min_length)
        if chosen is None:
            masks.append(np.zeros(values.shape, dtype=bool))
            continue
        threshold = (255 - chosen[0] * sample_rate) * (high - low) / 255 + low
        masks.append(cv2.erode((values > threshold).astype(np.uint8) * 255, kernel, iterations=1) > 0)
    return masks


def textured_maps(seed: int) -> list[np.ndarray]:
    """Smooth random texture with 0-3 bumps of random height and width per map."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:72, :64]
    maps = []
    for _ in range(6):
        texture = ndimage.gaussian_filter(rng.random((72, 64)), 5)
        values = 8 * (texture - texture.mean())
        for _ in range(rng.integers(0, 4)):
            row, col, width = rng.integers(8, 64), rng.integers(8, 56), rng.uniform(3, 6)
            values += rng.uniform(0.3, 1.0) * np.exp(
                -((rows - row) ** 2 + (cols - col) ** 2) / (2 * width**2)
            )
        maps.append(values)
    return maps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mebin_matches_the_reference_steps(seed: int) -> None:
    maps = textured_maps(seed)
    ours, theirs = mebin_masks(maps), reference_masks(maps)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert 0 < sum(bool(mask.any()) for mask in ours) < len(maps)  # some maps marked, some not


def test_mebin_marks_each_bump_and_nothing_on_a_normal_map() -> None:
    maps = [
        bumps(64, [(16, 16, 1.0), (44, 40, 0.8)], seed=0),
        bumps(64, [(30, 20, 0.9)], seed=1),
        bumps(64, [], seed=2),  # normal: its peak is the search range's low end
    ]
    masks = mebin_masks(maps)
    for mask, centres in zip(masks, [[(16, 16), (44, 40)], [(30, 20)], []], strict=True):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        assert count == len(centres)
        assert {labels[row, col] for row, col in centres} == set(range(1, count + 1))
    threshold, components = mebin_threshold(maps[0], *mebin_search_range(maps))
    assert components == 2 and mebin_search_range(maps)[0] < threshold < 0.8
    assert mebin_threshold(maps[2], *mebin_search_range(maps)) == (float("inf"), 0)


def test_mebin_in_batches_with_the_whole_sets_range_equals_one_call() -> None:
    maps = [bumps(40, [(10 + 4 * i, 20, 0.5 + 0.1 * i)], seed=i) for i in range(4)]
    whole = mebin_search_range(maps)
    batched = mebin_masks(maps[:2], search_range=whole) + mebin_masks(maps[2:], search_range=whole)
    assert all(np.array_equal(a, b) for a, b in zip(batched, mebin_masks(maps), strict=True))


def test_mebin_on_one_map_and_on_constant_maps() -> None:
    single = bumps(48, [(24, 24, 1.0)], seed=3)
    assert mebin_search_range([single]) == (float(single.min()), float(single.max()))  # equal peaks
    assert ndimage.label(mebin_masks([single])[0])[1] == 1
    assert not mebin_masks([np.full((20, 20), 0.3), np.full((20, 20), 0.3)])[0].any()


def test_mebin_without_erosion_binarises_the_map_itself() -> None:
    maps = [bumps(40, [(20, 20, 1.0)], seed=4), bumps(40, [(10, 30, 0.6)], seed=5)]
    low, high = mebin_search_range(maps)
    threshold, _ = mebin_threshold(maps[0], low, high, erode=False)
    assert np.array_equal(mebin_masks(maps, erode=False)[0], maps[0] > threshold)


def test_mebin_rejects_bad_settings_and_shapes() -> None:
    with pytest.raises(AnorefineError, match="MEBin sample_rate=0 must be 1 or more"):
        mebin_masks([np.zeros((4, 4))], sample_rate=0)
    with pytest.raises(MetricError, match=r"2-D anomaly maps \(H, W\), got shape \(1, 4, 4\)"):
        mebin_masks([np.zeros((1, 4, 4))])
    with pytest.raises(MetricError, match="at least one anomaly map"):
        mebin_masks([])
