"""Tests of anorefine.metrics against sklearn, straightforward numpy references and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from anorefine.errors import MetricError
from anorefine.metrics import METRIC_KEYS, AnomalyMetrics, boundary_f1, compute_metrics, ranking
from anorefine.metrics.references import (
    aupro_loop,
    aupro_mvtec,
    boundary_f1_edt,
    f1_iou_max_loop,
    pro_compat_loop,
)

TOL = 1e-6


def make_case(
    seed: int,
    count: int,
    size: int,
    defective: float = 0.5,
    levels: int | None = None,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Random maps with rectangular and diagonal-touching GT regions that score higher on average."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), dtype=bool)
    for index in range(count):
        if index > 0 and rng.random() >= defective:
            continue
        for _ in range(rng.integers(1, 4)):
            top, left = rng.integers(0, size - 3, size=2)
            height, width = rng.integers(1, max(2, size // 3), size=2)
            masks[index, top : top + height, left : left + width] = True
        corner = rng.integers(0, size - 2)
        masks[index, corner, corner] = masks[index, corner + 1, corner + 1] = True  # one 8-connected region
    maps = rng.normal(size=masks.shape) + 1.5 * masks * rng.random(masks.shape)
    if levels is not None:
        maps = np.round(maps * levels / 4) / (levels / 4)
    return maps.astype(dtype), masks


def one_pixel_case() -> tuple[np.ndarray, np.ndarray]:
    maps, masks = make_case(3, 6, 20)
    masks[5] = False
    masks[5, 10, 10] = True
    return maps, masks


def assert_matches_references(maps: np.ndarray, masks: np.ndarray, loops: bool) -> dict[str, float | None]:
    result = compute_metrics(maps, masks)
    truth = masks.astype(bool)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(truth.ravel(), maps.ravel()), abs=TOL)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(truth.ravel(), maps.ravel()), abs=TOL)
    precision, recall, _ = precision_recall_curve(truth.ravel(), maps.ravel())
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=recall > 0)
    assert result["pixel_f1_max"] == pytest.approx(f1.max(), abs=TOL)
    assert result["aupro"] == pytest.approx(aupro_mvtec(maps, truth), abs=TOL)
    labels, scores = truth.reshape(len(truth), -1).any(1), maps.reshape(len(maps), -1).max(1)
    if labels.all():
        assert result["image_auroc"] is None
    else:
        assert result["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=TOL)
    assert result["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=TOL)
    if loops:
        f1_max, iou_max, _ = f1_iou_max_loop(maps, truth)
        assert result["pixel_f1_max"] == pytest.approx(f1_max, abs=TOL)
        assert result["pixel_iou_max"] == pytest.approx(iou_max, abs=TOL)
        assert result["aupro"] == pytest.approx(aupro_loop(maps, truth), abs=TOL)
    return result


CASES = {
    "random": (lambda: make_case(0, 6, 24), True),
    "ties": (lambda: make_case(1, 8, 16, levels=5), True),
    "one_pixel_region": (one_pixel_case, True),
    "all_defective": (lambda: make_case(2, 5, 20, defective=1.0), True),
    "many_images": (lambda: make_case(4, 40, 64), False),
    "float64": (lambda: make_case(5, 6, 24, dtype=np.float64), True),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_sklearn_and_references(name: str) -> None:
    build, loops = CASES[name]
    maps, masks = build()
    result = assert_matches_references(maps, masks, loops)
    assert set(result) == set(METRIC_KEYS)
    assert all(isinstance(value, float) for key, value in result.items() if key != "image_auroc")


@pytest.mark.parametrize("name", ["random", "ties", "float64"])
def test_chunked_streaming_matches_one_chunk(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # chunks of 7 elements: tie groups span chunks, many chunks end no group, AUPRO stops mid-stream
    maps, masks = CASES[name][0]()
    expected = compute_metrics(maps, masks)
    monkeypatch.setattr(ranking, "CHUNK", 7)
    result = compute_metrics(maps, masks)
    for key in METRIC_KEYS:
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_descending_keys_order_and_inverse(dtype: torch.dtype) -> None:
    tiny = torch.finfo(dtype).tiny
    values = torch.tensor(
        [-np.inf, -1e30, -1.0, -tiny, -0.0, 0.0, tiny, 1e-30, 1.0, 3.5, np.inf], dtype=dtype
    )
    keys = ranking.descending_keys(values.flip(0))  # scores in descending order -> keys ascending
    assert bool((keys[1:] > keys[:-1]).sum() == len(values) - 2)  # strictly ascending except -0.0 == 0.0
    assert int(keys[5]) == int(keys[6])  # +0.0 and -0.0
    assert [ranking.key_to_score(key) for key in keys] == values.flip(0).tolist()


def test_ties_case_has_few_levels_and_signed_zeros() -> None:
    maps, masks = make_case(1, 8, 16, levels=5)
    maps[0, :2] = -0.0
    maps[0, 2:4] = 0.0
    assert len(np.unique(maps)) < 20
    assert_matches_references(maps, masks, loops=True)


def test_masks_given_as_0_255_uint8() -> None:
    maps, masks = make_case(6, 6, 24)
    assert_matches_references(maps, masks.astype(np.uint8) * 255, loops=True)
    assert compute_metrics(maps, masks.astype(np.uint8) * 255) == compute_metrics(maps, masks)
    assert compute_metrics(maps, masks.astype(np.uint8)) == compute_metrics(maps, masks)


def test_mvtec_references_agree() -> None:
    maps, masks = make_case(7, 5, 20, levels=40)
    assert aupro_loop(maps, masks) == pytest.approx(aupro_mvtec(maps, masks), abs=1e-9)
    assert aupro_loop(maps, masks, limit=0.05) == pytest.approx(
        aupro_mvtec(maps, masks, limit=0.05), abs=1e-9
    )


def test_aupro_limit_keyword() -> None:
    maps, masks = make_case(8, 6, 24)
    result = compute_metrics(maps, masks, aupro_limit=0.05)
    assert result["aupro"] == pytest.approx(aupro_loop(maps, masks, limit=0.05), abs=TOL)
    assert result["aupro"] != pytest.approx(compute_metrics(maps, masks)["aupro"], abs=1e-3)
    with pytest.raises(MetricError, match="aupro_limit"):
        compute_metrics(maps, masks, aupro_limit=0.0)


def test_anomalib_aupro_cross_check() -> None:
    from anomalib.metrics.aupro import _AUPRO

    maps, masks = make_case(9, 10, 32)
    metric = _AUPRO(fpr_limit=0.3)
    metric.update(torch.from_numpy(maps), torch.from_numpy(masks.astype(np.float32)))
    # anomalib cumulates in float32, hence the looser tolerance
    assert float(metric.compute()) == pytest.approx(compute_metrics(maps, masks)["aupro"], abs=1e-4)


def test_no_gt_region_raises_for_aupro() -> None:
    maps, masks = make_case(10, 4, 16)
    with pytest.raises(MetricError, match="AUPRO"):
        compute_metrics(maps, np.zeros_like(masks))


def test_pixel_metrics_none_without_masks() -> None:
    maps, masks = make_case(11, 8, 16)
    labels = masks.reshape(8, -1).any(1)
    result = compute_metrics(maps, None, labels=labels.astype(np.int64))
    pixel_keys = [key for key in METRIC_KEYS if not key.startswith("image_")]
    assert all(result[key] is None for key in pixel_keys)
    assert result["image_auroc"] == pytest.approx(roc_auc_score(labels, maps.reshape(8, -1).max(1)), abs=TOL)
    assert all(value is None for value in compute_metrics(maps).values())


def test_explicit_image_scores_and_labels() -> None:
    maps, masks = make_case(12, 10, 16)
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=10), np.array([0, 1] * 5)
    result = compute_metrics(maps, masks, scores, labels)
    assert result["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=TOL)
    assert result["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=TOL)


def test_torch_input_equals_numpy_input() -> None:
    maps, masks = make_case(13, 6, 24)
    expected = compute_metrics(maps, masks)
    assert compute_metrics(torch.from_numpy(maps)[:, None], torch.from_numpy(masks)[:, None]) == expected
    assert compute_metrics(torch.from_numpy(maps).requires_grad_(), torch.from_numpy(masks).int()) == expected


def test_float64_scores_are_not_merged() -> None:
    maps = np.ones((4, 8, 8), dtype=np.float64)
    masks = np.zeros(maps.shape, dtype=bool)
    masks[:2, 2:5, 2:5] = True
    maps[masks] += 1e-12
    result = compute_metrics(maps, masks)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=TOL)
    assert result["pixel_auroc"] == 1.0
    assert result["image_auroc"] == 1.0
    assert result["aupro"] == pytest.approx(1.0, abs=TOL)
    # the same scores in float32 are all ties: the case really depends on keeping float64
    assert compute_metrics(maps.astype(np.float32), masks)["pixel_auroc"] == 0.5


def test_integer_maps() -> None:
    maps, masks = make_case(14, 6, 16, levels=6)
    as_int = (maps * 4).astype(np.int64)
    assert_matches_references(as_int.astype(np.float64), masks, loops=True)
    assert compute_metrics(as_int, masks) == compute_metrics(as_int.astype(np.float64), masks)


def test_infinite_scores_rank_like_extreme_finite_scores() -> None:
    maps, masks = make_case(14, 6, 16)
    maps[0, 0, 0], maps[1, 0, 0], maps[2, 5, 5] = np.inf, -np.inf, np.inf
    finite = np.clip(maps, -1e30, 1e30)
    with_inf, expected = compute_metrics(maps, masks), compute_metrics(finite, masks)
    assert with_inf["pro_compat"] is None  # thresholds between -inf and inf are undefined
    ranking_keys = [key for key in METRIC_KEYS if key != "pro_compat"]
    assert {key: with_inf[key] for key in ranking_keys} == {key: expected[key] for key in ranking_keys}


@pytest.mark.parametrize(
    ("maps", "masks", "message"),
    [
        (np.zeros((2, 4, 4)), np.full((2, 4, 4), 2), "binary"),
        (np.full((2, 4, 4), np.nan), np.ones((2, 4, 4)), "NaN"),
        (np.zeros((2, 4, 4)), np.ones((2, 4, 5)), "shape"),
        (np.zeros((4, 4)), np.ones((4, 4)), "shape"),
    ],
)
def test_malformed_inputs_raise(maps: np.ndarray, masks: np.ndarray, message: str) -> None:
    with pytest.raises(MetricError, match=message):
        compute_metrics(maps, masks)


def single_pixel_truth() -> torch.Tensor:
    truth = torch.zeros(1, 12, 12, dtype=torch.bool)
    truth[0, 5, 5] = True
    return truth


@pytest.mark.parametrize(
    ("predicted_pixels", "expected"),
    [
        ([(5, 7)], 1.0),  # distance 2: within tolerance
        ([(7, 7)], 0.0),  # distance sqrt(8) > 2 (a Chebyshev tolerance would accept it)
        ([(5, 8)], 0.0),  # distance 3
        ([(5, 7), (0, 0)], 2 / 3),  # precision 1/2, recall 1
    ],
)
def test_boundary_f1_hand_made(predicted_pixels: list[tuple[int, int]], expected: float) -> None:
    maps = torch.zeros(1, 12, 12)
    for row, col in predicted_pixels:
        maps[0, row, col] = 1.0
    assert boundary_f1([maps], [single_pixel_truth()], 0.5) == pytest.approx(expected)


def test_boundary_f1_perfect_and_shifted() -> None:
    masks = np.zeros((3, 48, 48), dtype=bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 0:12, 20:40] = True  # touches the image frame: that side is no boundary
    perfect = compute_metrics(masks.astype(np.float32), masks)
    assert perfect["boundary_f1"] == 1.0
    assert perfect["pixel_f1_max"] == 1.0
    shifted_maps = np.roll(masks, 5, axis=2).astype(np.float32)
    shifted = compute_metrics(shifted_maps, masks)
    assert shifted["boundary_f1"] == pytest.approx(boundary_f1_edt(shifted_maps > 0.5, masks))
    assert 0.3 < shifted["boundary_f1"] < 0.9
    nudged = compute_metrics(np.roll(masks, 1, axis=2).astype(np.float32), masks)
    assert nudged["boundary_f1"] == 1.0


def test_boundary_f1_at_f1_max_threshold_matches_edt_reference() -> None:
    maps, masks = make_case(15, 6, 24, levels=8)
    _, _, threshold = f1_iou_max_loop(maps, masks)
    expected = boundary_f1_edt(maps >= threshold, masks)
    assert compute_metrics(maps, masks)["boundary_f1"] == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("name", ["random", "ties", "one_pixel_region", "float64"])
def test_pro_compat_matches_loop_reference(name: str) -> None:
    maps, masks = CASES[name][0]()
    assert compute_metrics(maps, masks)["pro_compat"] == pytest.approx(pro_compat_loop(maps, masks), abs=TOL)


def test_pro_compat_differs_from_aupro() -> None:
    # 35% of the normal pixels tie at 0.5: every threshold below 0.5 has FPR > 0.3, so pro_compat
    # rescales the short FPR range [0, 0.01] of the thresholds above 0.5 to [0, 1], while AUPRO
    # interpolates out to FPR 0.3 at the PRO reached there
    rng = np.random.default_rng(0)
    _, masks = make_case(16, 10, 32)
    draw = rng.random(masks.shape)
    normal = np.where(draw < 0.36, rng.uniform(0.5, 1.0, masks.shape), rng.uniform(0.0, 0.4, masks.shape))
    normal[draw < 0.35] = 0.5
    maps = np.where(masks, rng.uniform(0.3, 1.0, masks.shape), normal).astype(np.float32)
    result = compute_metrics(maps, masks)
    assert result["pro_compat"] == pytest.approx(pro_compat_loop(maps, masks), abs=TOL)
    assert result["aupro"] == pytest.approx(aupro_mvtec(maps, masks), abs=TOL)
    assert result["aupro"] - result["pro_compat"] > 0.3


def test_accumulator_over_batches_equals_one_call() -> None:
    maps, masks = make_case(17, 9, 20)
    scores = np.random.default_rng(1).normal(size=9)
    labels = masks.reshape(9, -1).any(1)
    metric = AnomalyMetrics()
    for start in range(0, 9, 3):
        part = slice(start, start + 3)
        metric.update(
            torch.from_numpy(maps[part])[:, None],
            torch.from_numpy(masks[part]).to(torch.uint8),
            torch.from_numpy(scores[part]),
            torch.from_numpy(labels[part]),
            has_mask=True,
        )
    assert metric.compute() == compute_metrics(maps, masks, scores, labels)
    metric.reset()
    with pytest.raises(MetricError, match="before any update"):
        metric.compute()
    metric.update(torch.from_numpy(maps[:3]), torch.from_numpy(masks[:3]))
    assert metric.compute() == compute_metrics(maps[:3], masks[:3])


def test_accumulator_pixel_metrics_none_when_a_mask_is_missing() -> None:
    maps, masks = make_case(18, 6, 16)
    labels = masks.reshape(6, -1).any(1)
    metric = AnomalyMetrics()
    metric.update(
        torch.from_numpy(maps[:3]), torch.from_numpy(masks[:3]), labels=torch.from_numpy(labels[:3])
    )
    metric.update(torch.from_numpy(maps[3:]), None, labels=torch.from_numpy(labels[3:]))
    result = metric.compute()
    assert result["pixel_auroc"] is None
    assert result["aupro"] is None
    assert result["image_auroc"] == compute_metrics(maps, None, labels=labels)["image_auroc"]
    with pytest.raises(MetricError, match="labels are required"):
        metric.update(torch.from_numpy(maps[:1]), None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input_equals_cpu_input() -> None:
    maps, masks = make_case(19, 6, 24)
    on_gpu = compute_metrics(torch.from_numpy(maps).cuda(), torch.from_numpy(masks).cuda())
    expected = compute_metrics(maps, masks)
    for key in METRIC_KEYS:
        assert on_gpu[key] == pytest.approx(expected[key], abs=1e-9), key


def test_accumulator_with_maps_of_different_sizes_matches_references() -> None:
    parts = [make_case(20, 3, 24), make_case(21, 2, 40), make_case(22, 4, 17)]
    metric = AnomalyMetrics()
    for maps, masks in parts:
        metric.update(torch.from_numpy(maps), torch.from_numpy(masks))
    result = metric.compute()
    flat_maps = np.concatenate([maps.ravel() for maps, _ in parts])
    flat_truth = np.concatenate([masks.ravel() for _, masks in parts])
    images = [(image, mask) for maps, masks in parts for image, mask in zip(maps, masks, strict=True)]
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(flat_truth, flat_maps), abs=TOL)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(flat_truth, flat_maps), abs=TOL)
    assert result["aupro"] == pytest.approx(
        aupro_mvtec([image for image, _ in images], [mask for _, mask in images]), abs=TOL
    )
    # one image per update gives exactly the same numbers (the sorted stream does not depend on batching)
    single = AnomalyMetrics()
    for image, mask in images:
        single.update(torch.from_numpy(image)[None], torch.from_numpy(mask)[None])
    assert single.compute() == result


def test_pixel_ap_since_scores_only_the_later_batches() -> None:
    maps, masks = make_case(23, 8, 20)
    metric = AnomalyMetrics()
    for start in range(0, 8, 2):
        metric.update(torch.from_numpy(maps[start : start + 2]), torch.from_numpy(masks[start : start + 2]))
    expected = average_precision_score(masks[4:].ravel(), maps[4:].ravel())
    assert metric.pixel_ap_since(2) == pytest.approx(expected, abs=TOL)
    assert metric.pixel_ap_since(4) is None
    normal_only = AnomalyMetrics()
    normal_only.update(torch.from_numpy(maps[:2]), torch.zeros(2, 20, 20, dtype=torch.bool))
    assert normal_only.pixel_ap_since(0) is None


def thin_regions_case(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth maps with long one-pixel-wide scratches (straight, diagonal and staircase) as GT regions."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), dtype=bool)
    for index in range(count - 1):  # the last image is normal
        for _ in range(3):
            row, col = rng.integers(0, size // 2, size=2)
            length = int(rng.integers(size // 4, size // 2))
            steps = np.arange(length)
            kind = rng.integers(0, 3)
            if kind == 0:
                masks[index, row, col : col + length] = True
            elif kind == 1:
                masks[index, row + steps, col + steps] = True  # 8-connected only
            else:
                masks[index, row + steps // 3, col + steps] = True
    noise = rng.normal(size=(count, size // 16, size // 16)).astype(np.float32)
    maps = np.kron(noise, np.ones((16, 16), dtype=np.float32))  # large tie blocks
    maps += masks * rng.random(masks.shape, dtype=np.float32) * 2.0
    return maps, masks


def test_long_thin_regions_at_1024() -> None:
    maps, masks = thin_regions_case(4, 1024, seed=24)
    result = compute_metrics(maps, masks)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=TOL)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=TOL)
    assert result["aupro"] == pytest.approx(aupro_mvtec(maps, masks), abs=TOL)
    assert 0.0 < result["aupro"] < 1.0
