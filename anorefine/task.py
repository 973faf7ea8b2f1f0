"""The LightningModule of a test pass: frozen detector + refiner, base and refined maps side by side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from anorefine.detectors.base import Detector
from anorefine.metrics import AnomalyMetrics
from anorefine.refiners.base import Refiner, base_map
from anorefine.run_folder import STAGES
from anorefine.samples import SampleKeeper

#: Receives each test batch with its maps: (batch, base map, refined map, refined image score).
MapSink = Callable[[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor], None]


class AnomalyTask(L.LightningModule):
    """Runs the detector and the refiner on test batches and accumulates metrics for both maps.

    Accumulators persist across ``trainer.test`` calls (a curriculum may test the stream group by
    group); ``compute_results`` scores everything seen. Ground-truth masks are read only by the
    metric accumulators, after both maps exist. With ``original_masks`` (index -> (H0, W0) bool mask,
    ``eval.resolution=original``) each map is upsampled bilinearly to its image's original size and
    scored against that mask; otherwise maps and masks are scored at the input size. ``sink``, when
    given, receives every batch's maps (``eval.save_maps`` writes them to files).
    """

    def __init__(
        self,
        detector: Detector,
        refiner: Refiner,
        aupro_limit: float = 0.3,
        original_masks: Callable[[int], torch.Tensor] | None = None,
        sink: MapSink | None = None,
    ) -> None:
        super().__init__()
        self.original_masks = original_masks
        self.sink = sink
        self.detector = detector
        self.refiner = refiner
        self.samples = SampleKeeper()  # bounded: the best/worst images for the run's figures
        # Never gathered across processes: under DDP each process tests every image itself (run.py).
        self.metrics = torch.nn.ModuleDict(
            {stage: AnomalyMetrics(aupro_limit=aupro_limit, sync_on_compute=False) for stage in STAGES}
        )

    @property
    def returns_base_map(self) -> bool:
        """True when the refiner's map is the base map itself (scored once, copied to ``refined``)."""
        return self.refiner.returns_base_map

    def predict_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(base map, refined map, image score) at the images' resolution."""
        output = self.detector(images)
        base = base_map(output, tuple(images.shape[-2:]))
        refined = base if self.returns_base_map else self.refiner(images, output)
        return base, refined, output.image_score

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        base, refined, image_score = self.predict_maps(batch["image"])
        refined_score = self.refiner.image_score(refined, image_score)
        if self.sink is not None:
            self.sink(batch, base, refined, refined_score)
        self.samples.update(batch, base, refined)
        stages = ("base",) if self.returns_base_map else STAGES
        originals = None
        if self.original_masks is not None:
            originals = [self.original_masks(int(index)) for index in batch["index"]]
        for stage, maps in zip(stages, (base, refined), strict=False):
            score = (image_score if stage == "base" else refined_score).float()
            metric = self.metrics[stage]
            if originals is None:
                metric.update(maps.float(), batch["mask"], score, batch["label"], batch["has_mask"])
                continue
            for i, mask in enumerate(originals):
                size = tuple(mask.shape)
                full = F.interpolate(maps[i : i + 1].float(), size=size, mode="bilinear", align_corners=False)
                image = slice(i, i + 1)
                metric.update(full, mask[None], score[image], batch["label"][image], batch["has_mask"][image])

    def compute_results(self) -> dict[str, dict[str, float | None]]:
        """Metrics of every map seen so far, per stage; resets the accumulators."""
        results = {"base": self.metrics["base"].compute()}
        results["refined"] = (
            dict(results["base"]) if self.returns_base_map else self.metrics["refined"].compute()
        )
        for metric in self.metrics.values():
            metric.reset()
        return results
