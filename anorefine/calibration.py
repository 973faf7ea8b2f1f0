"""What a run scores beside the task's own metrics: label-free thresholds (``eval.threshold``;
docs/thresholds.md: one threshold per stage from the maps of normal images only, ``quantile`` or
``mean_std``, or MEBin's per-image masks) applied to the test maps and scored as SegF1 and IoU; the
multi-view sample-level image metrics (``eval.sample_score``, Real-IAD); and the unlabeled test sets'
maps and masks written for an evaluation server (``eval.submission``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from anorefine.config import ThresholdConfig
from anorefine.data.dataset import AnomalyImageDataset, image_size
from anorefine.data.records import ImageRecord
from anorefine.map_files import at_size
from anorefine.metrics.image import image_metrics
from anorefine.metrics.multiview import SampleReduce, sample_scores
from anorefine.metrics.names import STAGES
from anorefine.metrics.segmentation import SegmentationScores
from anorefine.metrics.thresholds import GLOBAL_RULES, choose_threshold, mebin_masks, mebin_search_range
from anorefine.nodes import choice
from anorefine.submission import write_submission
from anorefine.task import AnomalyTask, Metrics, StoredMaps


@dataclass(frozen=True)
class Binarisation:
    """How a run binarises its maps: the rule, and per stage the threshold a global rule chose."""

    settings: ThresholdConfig
    thresholds: dict[str, float]

    @property
    def rule(self) -> str:
        return choice(self.settings.rule)

    def masks(self, stage: str, maps: Sequence[Tensor]) -> list[Tensor]:
        """Each (N,H,W) part of ``stage``'s maps as bool masks."""
        if self.rule in GLOBAL_RULES:
            return [part > self.thresholds[stage] for part in maps]
        images = [image.float().cpu().numpy() for part in maps for image in part]
        mebin = self.settings.mebin
        found = mebin_masks(
            images,
            search_range=mebin_search_range(images),
            sample_rate=int(mebin.sample_rate),
            min_interval_len=int(mebin.min_interval_len),
            erode=bool(mebin.erode),
            kernel_size=int(mebin.kernel_size),
        )
        out, start = [], 0
        for part in maps:
            out.append(torch.from_numpy(np.stack(found[start : start + len(part)])))
            start += len(part)
        return out

    def record(self) -> dict[str, Any]:
        """What results.json keeps of it: the rule and the thresholds chosen."""
        return {"rule": self.rule, "thresholds": dict(self.thresholds)}


def normal_maps(
    task: AnomalyTask, normals: AnomalyImageDataset, batch_size: int, device: torch.device
) -> dict[str, list[np.ndarray]]:
    """Base and refined maps of the normal images (the refiner as trained on the test stream)."""
    maps: dict[str, list[np.ndarray]] = {stage: [] for stage in STAGES}
    with torch.no_grad():
        for batch in DataLoader(normals, batch_size=batch_size):
            base, refined, _ = task.predict_maps(batch["image"].to(device))
            for stage, stage_maps in zip(STAGES, (base, refined), strict=True):
                maps[stage].append(stage_maps.float().cpu().numpy())
    return maps


def calibrate(
    settings: ThresholdConfig,
    task: AnomalyTask,
    normals: AnomalyImageDataset | None,
    batch_size: int,
    device: torch.device,
) -> Binarisation | None:
    """The run's binarisation (None for ``rule=none``): a global rule's threshold per stage from
    ``normals``' maps; MEBin needs none."""
    rule = choice(settings.rule)
    if rule == "none":
        return None
    thresholds: dict[str, float] = {}
    if rule in GLOBAL_RULES:
        assert normals is not None, "a global threshold rule needs normal images"
        maps = normal_maps(task, normals, batch_size, device)
        thresholds = {
            stage: choose_threshold(rule, maps[stage], quantile=float(settings.quantile), k=float(settings.k))
            for stage in STAGES
        }
    return Binarisation(settings, thresholds)


def segmentation_scores(binarisation: Binarisation, stored: StoredMaps) -> dict[str, Metrics]:
    """SegF1 and IoU of each stage's binarised maps against the ground-truth masks (none without masks)."""
    if stored.masks is None:
        return {}
    scores: dict[str, Metrics] = {}
    for stage, stage_maps in stored.maps.items():
        metric = SegmentationScores()
        for predicted, truth in zip(binarisation.masks(stage, stage_maps), stored.masks, strict=True):
            metric.update(predicted, truth)
        scores[stage] = metric.compute()
    return scores


def sample_metrics(
    records: Sequence[ImageRecord], reduce: SampleReduce, stored: StoredMaps
) -> dict[str, Metrics]:
    """Image AUROC and AP per physical sample (``sample_auroc``, ``sample_ap``): its views' scores
    reduced by ``reduce``, anomalous when any view is (anorefine.metrics.multiview); none when the test
    records carry no sample ids."""
    if stored.indices is None or any(records[i].sample_id is None for i in stored.indices):
        return {}
    ids = [records[i].sample_id for i in stored.indices]
    results: dict[str, Metrics] = {}
    for stage, scores in stored.scores.items():
        _, per_sample, anomalous = sample_scores(ids, scores, stored.labels, reduce)
        auroc, ap = image_metrics(per_sample, anomalous)
        results[stage] = {"sample_auroc": auroc, "sample_ap": ap}
    return results


def write_unlabeled_split(
    task: AnomalyTask,
    images: AnomalyImageDataset,
    binarisation: Binarisation | None,
    root: Path,
    folder: Path,
    batch_size: int,
    device: torch.device,
) -> int:
    """Score an unlabeled split (MVTec AD 2's private test sets) with the trained detector and refiner
    and write each image's refined map, at its own size, in the evaluation server's layout under
    ``folder`` (anorefine.submission), with its mask when a global threshold rule set one; returns the
    number of images written."""
    written = 0
    with torch.no_grad():
        for batch in DataLoader(images, batch_size=batch_size):
            _, refined, _ = task.predict_maps(batch["image"].to(device))
            for row, index in enumerate(batch["index"]):
                record = images.records[int(index)]
                width, height = image_size(record.image_path)
                values = at_size(refined[row], (height, width))
                mask = None
                if binarisation is not None and binarisation.rule in GLOBAL_RULES:
                    mask = values > binarisation.thresholds["refined"]
                write_submission(folder, record.image_path.relative_to(root), values, mask)
                written += 1
    return written
