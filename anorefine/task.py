"""The LightningModule of a test pass: frozen detector + refiner, base and refined maps side by side."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.utilities.data import dim_zero_cat

from anorefine.detectors.base import Detector
from anorefine.metrics import (
    SIZE_BINS,
    AnomalyMetrics,
    DeltaReplicates,
    delta_intervals,
    image_metrics,
    pixel_metrics,
    score_parts,
)
from anorefine.metrics.bootstrap import (
    IMAGE_METRICS,
    BootstrapSettings,
    replicate_image_metrics,
    resample_counts,
)
from anorefine.metrics.breakdown import kind_selections, select_images, size_metrics
from anorefine.metrics.names import AUPRO_LIMIT, METRIC_KEYS, SIZE_KEYS, STAGES
from anorefine.progress import ProgressLog
from anorefine.refiners.base import Refiner, base_map
from anorefine.samples import SampleKeeper
from anorefine.shapes import spatial_size
from anorefine.stages import StageClock

#: Receives each test batch with its maps: (batch, base map, refined map, refined image score).
MapSink = Callable[[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor], None]
Metrics = dict[str, float | None]
#: Metrics a run adds beside the task's own, from the stored maps and scores (SegF1 and IoU:
#: anorefine.calibration; multi-view sample scores): per stage, metric name -> value.
ExtraMetrics = Callable[["StoredMaps"], dict[str, Metrics]]


@dataclass
class ScoredCategory:
    """What ``AnomalyTask.compute_all`` scores from the accumulated maps of one category.

    ``metrics``: per stage, every metric (``compute_results``). ``breakdown`` (with ``breakdown=True``):
    ``{"kinds": {kind: {"images", "defective", "base", "refined"}}, "sizes": {bin key: {"label",
    "regions", "pixels", "base", "refined"}}}`` (layout: ``anorefine.run_folder``); ``sizes`` is empty
    without pixel metrics (an image without a mask, or no GT region), ``kinds`` without
    ``defect_kinds``. ``deltas``: the paired bootstrap's replicate Δs (``None``: no bootstrap, or a
    refiner that returns the base map). ``seconds``: time spent on the per-stage metrics, the
    breakdown and the bootstrap.
    """

    metrics: dict[str, Metrics]
    breakdown: dict[str, Any] | None = None
    deltas: DeltaReplicates | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class StoredMaps:
    """The accumulators' tensors, read in place (nothing is copied), in the order the images were
    tested: both stages share the images, masks and labels, so the base accumulator's masks serve both;
    ``indices``: each image's index in the test set (None when the batches carried none)."""

    maps: dict[str, list[torch.Tensor]]
    scores: dict[str, torch.Tensor]
    masks: list[torch.Tensor] | None  # None: some image has no mask, or no GT region anywhere
    labels: torch.Tensor
    kinds: list[str] | None
    indices: list[int] | None = None


def image_delta_replicates(
    base_scores: torch.Tensor,
    refined_scores: torch.Tensor,
    labels: torch.Tensor,
    kinds: list[str] | None,
    settings: BootstrapSettings,
) -> DeltaReplicates:
    """The image-metric views of ``delta_intervals`` (same draw: ``resample_counts`` with the same
    seed) for a category without pixel metrics: ``"all"`` and ``"kind/<k>"`` where both classes occur."""
    base, refined = (s.detach().cpu().double().numpy() for s in (base_scores, refined_scores))
    image_labels = labels.detach().cpu().bool().numpy()
    counts = resample_counts(image_labels.size, settings.replicates, settings.seed)
    selections = {"all": np.ones(image_labels.size, dtype=bool)}
    if kinds is not None:
        selections.update({f"kind/{kind}": chosen for kind, chosen in kind_selections(kinds).items()})
    views = {}
    for view, selected in selections.items():
        if 0 < image_labels[selected].sum() < selected.sum():
            view_counts = counts * selected
            before = replicate_image_metrics(base, image_labels, view_counts)
            after = replicate_image_metrics(refined, image_labels, view_counts)
            views[view] = {name: after[name] - before[name] for name in IMAGE_METRICS}
    return DeltaReplicates(views, settings.level)


class AnomalyTask(L.LightningModule):
    """Runs the detector and the refiner on test batches and accumulates metrics for both maps.

    Accumulators persist across ``trainer.test`` calls (a curriculum may test the stream group by
    group); ``compute_results`` scores everything seen. Ground-truth masks are read only by the
    metric accumulators, after both maps exist. With ``original_masks`` (index -> (H0, W0) bool mask,
    ``eval.resolution=original``) each map is upsampled bilinearly to its image's original size and
    scored against that mask (a batch's images of one size form one part of the accumulators, in
    batch order within a size); otherwise maps and masks are scored at the input size. ``sink``, when
    given, receives every batch's maps (``eval.save_maps`` writes them to files).

    ``compute_all`` adds, from the same accumulated tensors: with ``breakdown`` the metrics per defect
    kind (``defect_kinds``: dataset index -> the image's kind, ``"good"`` for normal images; the task
    records each tested image's index) and per defect size, and with ``bootstrap`` the paired bootstrap
    Δs of the category (docs/experiments.md). ``progress``, when given, counts the scored test images
    (a line per block of batches, at most every 30 s: a run without a terminal shows it is alive).
    ``clock`` times the detector's and the refiner's forward (``detector_maps``, ``refine``); a
    curriculum charges its own stages to it.
    """

    def __init__(
        self,
        detector: Detector,
        refiner: Refiner,
        aupro_limit: float = AUPRO_LIMIT,
        original_masks: Callable[[int], torch.Tensor] | None = None,
        sink: MapSink | None = None,
        defect_kinds: Callable[[int], str] | None = None,
        breakdown: bool = False,
        bootstrap: BootstrapSettings | None = None,
        progress: ProgressLog | None = None,
        clock: StageClock | None = None,
    ) -> None:
        super().__init__()
        self.progress = progress
        self.clock = clock or StageClock()
        self.original_masks = original_masks
        self.sink = sink
        self.aupro_limit = aupro_limit
        self.defect_kinds = defect_kinds
        self.breakdown = breakdown
        self.bootstrap = bootstrap
        self._indices: list[torch.Tensor] = []  # dataset indices of the scored images, in order
        self.detector = detector
        self.refiner = refiner
        self.samples = SampleKeeper()  # bounded: the best/worst images for the run's figures
        # Never gathered across processes: under DDP each process tests every image itself (run.py).
        self.metrics = torch.nn.ModuleDict(
            {stage: AnomalyMetrics(aupro_limit=aupro_limit, sync_on_compute=False) for stage in STAGES}
        )

    def metric(self, stage: str) -> AnomalyMetrics:
        """The metric state of ``stage`` (``base`` or ``refined``)."""
        return cast(AnomalyMetrics, self.metrics[stage])

    @property
    def returns_base_map(self) -> bool:
        """True when the refiner's map is the base map itself (scored once, copied to ``refined``)."""
        return self.refiner.returns_base_map

    def predict_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(base map, refined map, image score) at the images' resolution."""
        with self.clock.stage("detector_maps", len(images)):
            output = self.detector(images)
            base = base_map(output, spatial_size(images))
        if self.returns_base_map:
            return base, base, output.image_score
        with self.clock.stage("refine", len(images)):
            refined = self.refiner(images, output)
        return base, refined, output.image_score

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        base, refined, image_score = self.predict_maps(batch["image"])
        refined_score = self.refiner.image_score(refined, image_score)
        if self.sink is not None:
            self.sink(batch, base, refined, refined_score)
        self.samples.update(batch, base, refined)
        stages = ("base",) if self.returns_base_map else STAGES
        indices = torch.as_tensor(batch["index"]).detach().cpu().reshape(-1) if "index" in batch else None
        if self.original_masks is None:
            if indices is not None:
                self._indices.append(indices)
            for stage, maps in zip(stages, (base, refined), strict=False):
                score = (image_score if stage == "base" else refined_score).float()
                self.metric(stage).update(
                    maps.float(), batch["mask"], score, batch["label"], batch["has_mask"]
                )
            return
        # each image at its original size; the images of one size go in as one part (the metrics
        # handle a part per call, and many one-image parts cost several times more)
        originals = [self.original_masks(int(index)) for index in batch["index"]]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for row, mask in enumerate(originals):
            by_size.setdefault(tuple(mask.shape), []).append(row)
        for size, rows in by_size.items():
            if indices is not None:
                self._indices.append(indices[rows])
            masks = torch.stack([originals[row] for row in rows])
            pick = torch.tensor(rows)
            labels, has_mask = (torch.as_tensor(batch[key])[pick] for key in ("label", "has_mask"))
            for stage, maps in zip(stages, (base, refined), strict=False):
                score = (image_score if stage == "base" else refined_score).float()
                chosen = maps[pick.to(maps.device)].float()
                full = F.interpolate(chosen, size=size, mode="bilinear", align_corners=False)
                self.metric(stage).update(full, masks, score[pick.to(score.device)], labels, has_mask)

    def on_test_batch_end(
        self, outputs: Any, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count the batch's images as scored (``progress``)."""
        if self.progress is not None:
            self.progress.advance(len(batch["image"]))

    def compute_results(self) -> dict[str, Metrics]:
        """Metrics of every map seen so far, per stage; resets the accumulators."""
        return self.compute_all().metrics

    def compute_all(self, extra_metrics: Sequence[ExtraMetrics] = ()) -> ScoredCategory:
        """Metrics of every map seen so far, per stage, with the breakdown and the bootstrap Δs the
        task was built for (:class:`ScoredCategory`), and each of ``extra_metrics`` of the stored maps
        and scores; resets the accumulators."""
        try:
            started = time.perf_counter()
            results = ScoredCategory(self._stage_metrics())
            results.seconds["metrics_s"] = time.perf_counter() - started
            for extra in extra_metrics:
                for stage, values in extra(self._stored()).items():
                    results.metrics[stage].update(values)
            if self.breakdown or self._bootstraps:
                stored = self._stored()
                started = time.perf_counter()
                if self.breakdown:
                    results.breakdown = self._breakdown(stored)
                    results.seconds["breakdown_s"] = time.perf_counter() - started
                if self._bootstraps:
                    started = time.perf_counter()
                    results.deltas = self._bootstrap(stored)
                    results.seconds["bootstrap_s"] = time.perf_counter() - started
            return results
        finally:
            for stage in STAGES:
                self.metric(stage).reset()
            self._indices = []

    @property
    def _bootstraps(self) -> bool:
        """True when Δs are resampled: a bootstrap with replicates, and a refined map of its own."""
        return self.bootstrap is not None and self.bootstrap.replicates > 0 and not self.returns_base_map

    def _stage_metrics(self) -> dict[str, Metrics]:
        results = {"base": self._compute(self.metric("base"))}
        results["refined"] = (
            dict(results["base"]) if self.returns_base_map else self._compute(self.metric("refined"))
        )
        return results

    def _compute(self, metric: AnomalyMetrics) -> Metrics:
        """The accumulator's metrics; without any GT region (no defective image) the pixel metrics
        are ``None`` rather than an error."""
        if metric.gt_masks and not any(bool(m.any()) for m in metric.gt_masks):
            scores, labels = dim_zero_cat(metric.image_scores), dim_zero_cat(metric.labels)
            return score_parts(metric.anomaly_maps, None, scores, labels, self.aupro_limit)
        return metric.compute()

    def _stored(self) -> StoredMaps:
        """The accumulated tensors as they are (no copy), in the order the images were tested: the
        dataset's, or a curriculum's stream order (PGT), which the bootstrap's draws follow."""
        base = self.metric("base")
        refined = base if self.returns_base_map else self.metric("refined")
        has_masks = bool(torch.cat(base.has_mask).all()) and any(bool(m.any()) for m in base.gt_masks)
        labels = dim_zero_cat(base.labels)
        kinds = indices = None
        if self._indices and sum(len(i) for i in self._indices) == labels.numel():
            indices = [int(i) for i in torch.cat(self._indices).tolist()]
            if self.defect_kinds is not None:
                kinds = [self.defect_kinds(i) for i in indices]
        return StoredMaps(
            maps={"base": base.anomaly_maps, "refined": refined.anomaly_maps},
            scores={"base": dim_zero_cat(base.image_scores), "refined": dim_zero_cat(refined.image_scores)},
            masks=base.gt_masks if has_masks else None,
            labels=labels,
            kinds=kinds,
            indices=indices,
        )

    @property
    def _scored_stages(self) -> tuple[str, ...]:
        return ("base",) if self.returns_base_map else STAGES

    def _kind_metrics(self, stored: StoredMaps, selected: np.ndarray, stage: str) -> Metrics:
        """The metrics of the selected images (those of ``kind_metrics`` but ``boundary_f1``, left
        ``None``: per kind it would cost more than all the others together); pixel metrics ``None``
        when the selection holds no GT region."""
        index = torch.from_numpy(np.flatnonzero(selected))
        scores = stored.scores[stage]
        results: Metrics = dict.fromkeys(METRIC_KEYS)
        results["image_auroc"], results["image_ap"] = image_metrics(
            scores[index.to(scores.device)], stored.labels[index.to(stored.labels.device)]
        )
        masks = None if stored.masks is None else select_images(stored.masks, selected)
        if masks is not None and any(bool(m.any()) for m in masks):
            maps = select_images(stored.maps[stage], selected)
            results.update(pixel_metrics(maps, masks, self.aupro_limit).values())
        return results

    def _breakdown(self, stored: StoredMaps) -> dict[str, Any]:
        """Per defect kind and per size bin, both stages (the refined copy of the base without a
        refined map of its own)."""
        kinds: dict[str, Any] = {}
        if stored.kinds is not None:
            counts = Counter(stored.kinds)
            for kind, selected in kind_selections(stored.kinds).items():
                entry: dict[str, Any] = {"images": int(selected.sum()), "defective": counts[kind]}
                for stage in self._scored_stages:
                    entry[stage] = self._kind_metrics(stored, selected, stage)
                entry.setdefault("refined", dict(entry["base"]))
                kinds[kind] = entry
        sizes: dict[str, Any] = {}
        if stored.masks is not None:
            per_stage = {
                stage: size_metrics(stored.maps[stage], stored.masks, self.aupro_limit)
                for stage in self._scored_stages
            }
            per_stage.setdefault("refined", per_stage["base"])
            for size_bin in SIZE_BINS:
                counted = per_stage["base"][size_bin.key]
                sizes[size_bin.key] = {
                    "label": size_bin.label,
                    "regions": counted["regions"],
                    "pixels": counted["pixels"],
                    **{
                        stage: {name: per_stage[stage][size_bin.key][name] for name in SIZE_KEYS}
                        for stage in STAGES
                    },
                }
        return {"kinds": kinds, "sizes": sizes}

    def _bootstrap(self, stored: StoredMaps) -> DeltaReplicates:
        """``delta_intervals`` of the category (image metrics alone without pixel metrics); without
        ``breakdown`` only the ``"all"`` view is kept."""
        settings = self.bootstrap
        assert settings is not None
        kinds = stored.kinds if self.breakdown else None
        if stored.masks is None:
            return image_delta_replicates(
                stored.scores["base"], stored.scores["refined"], stored.labels, kinds, settings
            )
        deltas = delta_intervals(
            stored.maps["base"],
            stored.maps["refined"],
            stored.masks,
            stored.scores["base"],
            stored.scores["refined"],
            stored.labels,
            kinds,
            settings,
            aupro_limit=self.aupro_limit,
        )
        if not self.breakdown:
            return DeltaReplicates({"all": deltas.views["all"]}, deltas.level)
        return deltas
