"""SegmentationScores (SegF1, IoU at a fixed threshold) against numpy and sklearn on the pooled pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score

from anorefine.errors import MetricError
from anorefine.metrics.segmentation import SegmentationScores


def batches(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(predicted, ground-truth) bool batches of different sizes; some images are all normal."""
    rng = np.random.default_rng(seed)
    out = []
    for count, height, width in ((3, 12, 16), (2, 20, 9), (4, 7, 7)):
        truth = rng.random((count, height, width)) < 0.15
        truth[rng.random(count) < 0.4] = False  # normal images: no defect pixel
        predicted = np.where(truth, rng.random(truth.shape) < 0.6, rng.random(truth.shape) < 0.1)
        out.append((predicted, truth))
    return out


def pooled_counts(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int, int]:
    predicted = np.concatenate([p.ravel() for p, _ in parts])
    truth = np.concatenate([t.ravel() for _, t in parts])
    return int((predicted & truth).sum()), int((predicted & ~truth).sum()), int((~predicted & truth).sum())


def scores_of(parts: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float | None]:
    metric = SegmentationScores()
    for predicted, truth in parts:
        metric.update(torch.from_numpy(predicted), torch.from_numpy(truth))
    return metric.compute()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_are_the_f1_and_iou_of_all_pixels_pooled(seed: int) -> None:
    parts = batches(seed)
    result = scores_of(parts)
    tp, fp, fn = pooled_counts(parts)
    assert result["seg_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert result["seg_iou"] == pytest.approx(tp / (tp + fp + fn), abs=1e-12)
    truth = np.concatenate([t.ravel() for _, t in parts])
    predicted = np.concatenate([p.ravel() for p, _ in parts])
    assert result["seg_f1"] == pytest.approx(f1_score(truth, predicted), abs=1e-12)
    assert result["seg_iou"] == pytest.approx(jaccard_score(truth, predicted), abs=1e-12)


def test_pooling_is_not_a_mean_over_images() -> None:
    truth = np.zeros((2, 4, 4), dtype=bool)
    truth[0, :2] = True  # 8 defect pixels in image 0, image 1 is normal
    predicted = truth.copy()
    predicted[1, 0, 0] = True  # one false positive on the normal image
    result = scores_of([(predicted, truth)])
    assert result["seg_f1"] == pytest.approx(16 / 17)  # per-image F1s would be 1 and 0: mean 0.5
    assert result["seg_iou"] == pytest.approx(8 / 9)


def test_normal_images_only_count_their_marked_pixels() -> None:
    parts = batches(3)
    normal = np.zeros((2, 10, 10), dtype=bool)
    marked = normal.copy()
    marked[0, 3:5, 3:5] = True  # 4 false positives
    tp, fp, fn = pooled_counts(parts)
    result = scores_of([*parts, (marked, normal)])
    assert result["seg_f1"] == pytest.approx(2 * tp / (2 * tp + fp + 4 + fn))
    assert scores_of([*parts, (normal, normal)]) == scores_of(parts)  # unmarked normal images change nothing


def test_no_defect_anywhere() -> None:
    normal = np.zeros((3, 6, 6), dtype=bool)
    marked = normal.copy()
    marked[1, 2, 2] = True
    assert scores_of([(normal, normal)]) == {"seg_f1": None, "seg_iou": None}  # 0/0: undefined
    assert scores_of([(marked, normal)]) == {"seg_f1": 0.0, "seg_iou": 0.0}
    assert f1_score(normal.ravel(), marked.ravel(), zero_division=0) == 0.0


def test_accepts_0_255_masks_with_a_channel_and_keeps_int64_counts() -> None:
    parts = batches(4)
    metric = SegmentationScores()
    for _ in range(3):  # many updates: the state stays four int64 counts
        for predicted, truth in parts:
            metric.update((predicted * 255).astype(np.uint8)[:, None], truth.astype(np.int64))
    tp, fp, fn = pooled_counts(parts)
    assert (int(metric.tp), int(metric.fp), int(metric.fn)) == (3 * tp, 3 * fp, 3 * fn)
    assert metric.tp.dtype == torch.int64 and metric.tp.numel() == 1
    assert metric.compute() == scores_of(parts)
    metric.reset()
    assert metric.compute() == {"seg_f1": None, "seg_iou": None}


def test_rejects_mismatched_or_non_binary_masks() -> None:
    with pytest.raises(MetricError, match="does not match"):
        SegmentationScores().update(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))
    with pytest.raises(MetricError, match="pred_masks must be binary"):
        SegmentationScores().update(np.full((1, 4, 4), 0.7), np.zeros((1, 4, 4), bool))
