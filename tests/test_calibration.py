"""Thresholds without labels in the train path (anorefine.calibration): the binarisation of stored
maps, SegF1/IoU against a direct computation, the threshold's split, and a run that reports them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import TINY_RUN, compose_with, run_train
from fixtures_data import SIZE, make_mvtec_ad2, make_realiad
from omegaconf import OmegaConf
from PIL import Image
from sklearn.metrics import roc_auc_score

from anorefine.calibration import Binarisation, sample_metrics, segmentation_scores
from anorefine.data.records import ImageRecord
from anorefine.errors import AnorefineError
from anorefine.metrics.thresholds import mebin_masks
from anorefine.pipeline import Pipeline
from anorefine.task import StoredMaps


def settings(rule: str) -> object:
    node = {"rule": rule, "quantile": 0.99, "k": 3.0, "source": "train",
            "mebin": {"sample_rate": 4, "min_interval_len": 4, "erode": True, "kernel_size": 6}}  # fmt: skip
    return OmegaConf.create(node)


def parts(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two parts of maps with a bright square where the mask marks a defect (and noise elsewhere)."""
    generator = torch.Generator().manual_seed(seed)
    maps, masks = [], []
    for count, side in ((3, 32), (2, 40)):
        part = torch.rand(count, side, side, generator=generator)
        mask = torch.zeros(count, side, side, dtype=torch.bool)
        mask[1:, 8:16, 8:16] = True
        maps.append(part + 2.0 * mask)
        masks.append(mask)
    return maps, masks


def stored(maps: dict[str, list[torch.Tensor]], masks: list[torch.Tensor]) -> StoredMaps:
    """What AnomalyTask.compute_all hands its extra metrics (scores and labels unused here)."""
    labels = torch.cat([m.flatten(1).any(1) for m in masks])
    return StoredMaps(maps, {stage: labels.float() for stage in maps}, masks, labels, None)


def direct_f1_iou(predicted: list[np.ndarray], truth: list[np.ndarray]) -> tuple[float, float]:
    p = np.concatenate([a.ravel() for a in predicted])
    t = np.concatenate([a.ravel() for a in truth])
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


@pytest.mark.parametrize("threshold", [0.9, 1.5, 2.5])
def test_a_global_threshold_scores_like_a_direct_count(threshold: float) -> None:
    maps, masks = parts(0)
    refined = [m * 0.5 for m in maps]
    binarisation = Binarisation(settings("quantile"), {"base": threshold, "refined": threshold / 2})  # type: ignore[arg-type]
    scores = segmentation_scores(binarisation, stored({"base": maps, "refined": refined}, masks))
    for stage, stage_maps, cut in (("base", maps, threshold), ("refined", refined, threshold / 2)):
        predicted = [(m > cut).numpy() for m in stage_maps]
        f1, iou = direct_f1_iou(predicted, [m.numpy() for m in masks])
        assert scores[stage]["seg_f1"] == pytest.approx(f1) and scores[stage]["seg_iou"] == pytest.approx(iou)
    if threshold == 1.5:  # between the noise (below 1) and the defects (above 2): every pixel right
        assert scores["base"]["seg_f1"] == scores["base"]["seg_iou"] == 1.0


def test_mebin_binarises_every_image_of_the_set_with_one_search_range() -> None:
    maps, masks = parts(1)
    binarisation = Binarisation(settings("mebin"), {})  # type: ignore[arg-type]
    found = binarisation.masks("base", maps)
    assert [tuple(f.shape) for f in found] == [tuple(m.shape) for m in maps]
    expected = mebin_masks([image.numpy() for part in maps for image in part])
    flat = [image.numpy() for part in found for image in part]
    assert all(np.array_equal(a, b) for a, b in zip(flat, expected, strict=True))
    scores = segmentation_scores(binarisation, stored({"base": maps}, masks))
    assert scores["base"]["seg_f1"] == pytest.approx(
        direct_f1_iou(flat, [m.numpy() for p in masks for m in p])[0]
    )


def test_the_threshold_split_must_exist_and_is_checked_first() -> None:
    pipeline = Pipeline(compose_with([*TINY_RUN, "eval.threshold.rule=quantile"]))  # source: validation
    with pytest.raises(
        AnorefineError, match=r"eval.threshold.source=validation: dataset=demo has no validation"
    ):
        pipeline.check(["brick"], ("test", "train"))
    assert Pipeline(compose_with(["eval.threshold.rule=mebin"])).threshold_split() is None
    assert (
        Pipeline(
            compose_with(["eval.threshold.rule=mean_std", "eval.threshold.source=train"])
        ).threshold_split()
        == "train"
    )


@pytest.mark.slow
def test_a_run_reports_segf1_and_iou_at_the_threshold_of_its_normal_images(tmp_path: Path) -> None:
    run = run_train(
        [*TINY_RUN, "dataset.categories=[brick]", "eval.bootstrap.replicates=0", "refiner=f2pad",
         "eval.threshold.rule=mean_std", "eval.threshold.source=train", "eval.threshold.k=4"],
        tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = run.results
    chosen = results["thresholds"]["brick"]
    assert chosen["rule"] == "mean_std" and set(chosen["thresholds"]) == {"base", "refined"}
    for stage in ("base", "refined"):
        metrics = results["metrics"]["brick"][stage]
        assert 0.0 <= metrics["seg_f1"] <= 1.0 and 0.0 <= metrics["seg_iou"] <= metrics["seg_f1"]
        assert results["metrics"]["mean"][stage]["seg_f1"] == metrics["seg_f1"]


def test_a_submission_needs_a_dataset_with_unlabeled_test_sets() -> None:
    pipeline = Pipeline(compose_with(["eval.submission=server_files"]))
    with pytest.raises(AnorefineError, match=r"dataset=demo has no unlabeled test set to write"):
        pipeline.check(["brick"], ("test", "train"))


@pytest.mark.slow
def test_mvtec_ad2_private_sets_are_written_in_the_server_layout(tmp_path: Path) -> None:
    """Fit on train, threshold on validation/good, score test_public; then the private sets' refined
    maps (float16 TIFF at each image's size) and masks (0/255 PNG at the validation threshold)."""
    root = make_mvtec_ad2(tmp_path / "ad2", categories=("can",))
    out = tmp_path / "server"
    run = run_train(
        [*TINY_RUN, "dataset=mvtec_ad2", f"dataset.root={root}", "eval.bootstrap.replicates=0",
         "eval.threshold.rule=mean_std", f"eval.submission={out}"],
        tmp_path / "run",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    threshold = run.results["thresholds"]["can"]["thresholds"]["refined"]
    for split, count in (("test_private", 3), ("test_private_mixed", 2)):
        maps = sorted((out / "anomaly_images" / "can" / split).glob("*.tiff"))
        masks = sorted((out / "anomaly_images_thresholded" / "can" / split).glob("*.png"))
        assert [p.stem for p in maps] == [p.stem for p in masks] == [f"{i:03d}_regular" for i in range(count)]
        for map_path, mask_path in zip(maps, masks, strict=True):
            values = tifffile.imread(map_path)
            mask = np.asarray(Image.open(mask_path))
            assert values.dtype == np.float16 and values.shape == mask.shape == SIZE
            assert set(np.unique(mask)) <= {0, 255}
            # the mask was set on the float32 map; float16 storage may move values within 0.1 % of it
            clear = np.abs(values.astype(np.float32) - threshold) > 1e-3 * abs(threshold)
            np.testing.assert_array_equal(
                (mask == 255)[clear], (values.astype(np.float32) > threshold)[clear]
            )


def test_sample_metrics_reduce_each_sample_s_views_like_a_direct_loop() -> None:
    samples = ["s0", "s0", "s1", "s1", "s2", "s2", "s3", "s3"]
    labels = torch.tensor([0, 0, 0, 1, 0, 0, 1, 0])
    records = [
        ImageRecord(Path(f"{i}.png"), None, int(labels[i]), "x", "c", s) for i, s in enumerate(samples)
    ]
    order = [3, 0, 5, 1, 7, 2, 6, 4]  # tested in a stream order, not the dataset's
    scores = torch.tensor([0.2, 0.9, 0.4, 0.3, 0.1, 0.5, 0.8, 0.6])  # per tested image
    tested = StoredMaps({}, {"base": scores, "refined": scores * 2}, None, labels[order], None, order)
    metrics = sample_metrics(records, "max", tested)
    per_sample: dict[str, list[float]] = {}
    anomalous: dict[str, bool] = {}
    for position, index in enumerate(order):
        per_sample.setdefault(samples[index], []).append(float(scores[position]))
        anomalous[samples[index]] = anomalous.get(samples[index], False) or bool(labels[index])
    names = sorted(per_sample)
    expected = roc_auc_score([anomalous[n] for n in names], [max(per_sample[n]) for n in names])
    assert metrics["base"]["sample_auroc"] == pytest.approx(expected)
    assert metrics["refined"]["sample_auroc"] == pytest.approx(expected)  # a monotone rescaling
    assert sample_metrics(records, "max", StoredMaps({}, {"base": scores}, None, labels, None, None)) == {}


@pytest.mark.slow
def test_a_real_iad_run_reports_the_multi_view_sample_score(tmp_path: Path) -> None:
    root = make_realiad(tmp_path / "realiad", categories=("audiojack",))
    run = run_train(
        [*TINY_RUN, "dataset=realiad", f"dataset.root={root}", "eval.bootstrap.replicates=0",
         "eval.sample_score=max"],
        tmp_path / "run",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    base = run.results["metrics"]["audiojack"]["base"]
    assert 0.0 <= base["sample_auroc"] <= 1.0 and 0.0 <= base["sample_ap"] <= 1.0
