"""Straightforward numpy reference implementations of the metrics: the tests' references, make bench's peer.

They favour the obvious loop over speed; ``aupro_mvtec`` follows the structure of MVTec's official
``compute_pro`` (per-pixel change arrays, one sort, cumulative sums) and is also the speed baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage import measure
from sklearn.metrics import auc

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def label_image(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of one (H,W) mask."""
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    return labels, int(count)


def trapezoid_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the polyline (x ascending) from x[0] to ``x_max``, y interpolated at ``x_max``."""
    correction = 0.0
    if x_max not in x:
        insert = int(np.searchsorted(x, x_max, side="right"))
        if insert < len(x):
            y_at = y[insert - 1] + (y[insert] - y[insert - 1]) * (x_max - x[insert - 1]) / (
                x[insert] - x[insert - 1]
            )
            correction = 0.5 * (y_at + y[insert - 1]) * (x_max - x[insert - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def aupro_mvtec(
    maps: Sequence[np.ndarray] | np.ndarray, masks: Sequence[np.ndarray] | np.ndarray, limit: float = 0.3
) -> float:
    """AUPRO the way MVTec's ``compute_pro`` builds the curve: change arrays, one sort, cumsums.

    ``maps``/``masks``: (N,H,W) arrays, or sequences of (H,W) arrays whose sizes may differ.
    """
    fp_changes, pro_changes = [], []
    num_normal, num_regions = 0, 0
    for mask in masks:
        labels, count = label_image(mask)
        num_regions += count
        normal = labels == 0
        num_normal += int(normal.sum())
        fp_changes.append(normal.astype(np.uint32).ravel())
        pro_change = np.zeros(mask.shape, dtype=np.float64)
        for region in range(1, count + 1):
            inside = labels == region
            pro_change[inside] = 1.0 / inside.sum()
        pro_changes.append(pro_change.ravel())
    flat_maps = np.concatenate([np.asarray(m).ravel() for m in maps])
    order = np.argsort(flat_maps, kind="stable")[::-1]
    sorted_scores = flat_maps[order]
    fprs = np.cumsum(np.concatenate(fp_changes)[order], dtype=np.float64) / num_normal
    pros = np.cumsum(np.concatenate(pro_changes)[order]) / num_regions
    tie_end = np.append(np.diff(sorted_scores) != 0, True)
    fprs = np.concatenate([[0.0], fprs[tie_end]])
    pros = np.concatenate([[0.0], pros[tie_end]])
    return trapezoid_area(fprs, pros, limit) / limit


def aupro_loop(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """AUPRO by looping over the distinct thresholds, highest first, until FPR passes ``limit``."""
    labels = np.zeros(maps.shape, dtype=np.int64)
    num_regions = 0
    for index, mask in enumerate(masks):
        image_labels, count = label_image(mask)
        labels[index] = np.where(image_labels > 0, image_labels + num_regions, 0)
        num_regions += count
    sizes = np.bincount(labels.ravel(), minlength=num_regions + 1)
    normal = labels == 0
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        predicted = maps >= threshold
        fprs.append((predicted & normal).sum() / normal.sum())
        overlap = np.bincount(labels[predicted], minlength=num_regions + 1)[1:] / sizes[1:]
        pros.append(overlap.mean())
        if fprs[-1] > limit:
            break
    return trapezoid_area(np.array(fprs), np.array(pros), limit) / limit


def f1_iou_max_loop(maps: np.ndarray, masks: np.ndarray) -> tuple[float, float, float]:
    """(F1-max, IoU-max, threshold of the first F1 maximum) over thresholds at every distinct score."""
    truth = masks.astype(bool)
    best_f1, best_iou, best_threshold = -1.0, -1.0, np.nan
    for threshold in np.unique(maps)[::-1]:
        predicted = maps >= threshold
        tp = int((predicted & truth).sum())
        fp = int((predicted & ~truth).sum())
        fn = int((~predicted & truth).sum())
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best_f1:
            best_f1, best_threshold = f1, float(threshold)
        best_iou = max(best_iou, tp / (tp + fp + fn))
    return best_f1, best_iou, best_threshold


def boundary_f1_edt(predicted: np.ndarray, truth: np.ndarray, tolerance: float = 2.0) -> float:
    """Boundary F1 of (N,H,W) bool masks with scipy: erosion for boundaries, EDT for distances."""
    cross = ndimage.generate_binary_structure(2, 1)
    matched_pred = matched_truth = num_pred = num_truth = 0
    for pred, gt in zip(predicted, truth, strict=True):
        pred_edge = pred & ~ndimage.binary_erosion(pred, cross, border_value=1)
        gt_edge = gt & ~ndimage.binary_erosion(gt, cross, border_value=1)
        num_pred += int(pred_edge.sum())
        num_truth += int(gt_edge.sum())
        if pred_edge.any() and gt_edge.any():
            matched_pred += int((ndimage.distance_transform_edt(~gt_edge)[pred_edge] <= tolerance).sum())
            matched_truth += int((ndimage.distance_transform_edt(~pred_edge)[gt_edge] <= tolerance).sum())
    precision, recall = matched_pred / num_pred, matched_truth / num_truth
    return 2 * precision * recall / (precision + recall)


def pro_compat_loop(
    maps: np.ndarray, masks: np.ndarray, num_thresholds: int = 200, fpr_limit: float = 0.3
) -> float:
    """AnomalyCLIP-style PRO: 200 thresholds, skimage regionprops per image, FPR < 0.3, rescaled FPR."""
    low, high = float(maps.min()), float(maps.max())
    delta = (high - low) / num_thresholds
    regions = [measure.regionprops(measure.label(mask)) for mask in masks]
    normal = ~masks.astype(bool)
    scores = maps.astype(np.float64)
    fprs, pros = [], []
    for k in range(num_thresholds):
        predicted = scores > low + k * delta
        overlaps = [
            predicted[index][region.coords[:, 0], region.coords[:, 1]].sum() / region.area
            for index, image_regions in enumerate(regions)
            for region in image_regions
        ]
        pros.append(np.mean(overlaps))
        fprs.append((predicted & normal).sum() / normal.sum())
    fprs_array, pros_array = np.array(fprs), np.array(pros)
    kept = fprs_array < fpr_limit
    fprs_array, pros_array = fprs_array[kept], pros_array[kept]
    rescaled = (fprs_array - fprs_array.min()) / (fprs_array.max() - fprs_array.min())
    return float(auc(rescaled, pros_array))
