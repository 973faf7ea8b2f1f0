"""The one pipeline train and predict share: check everything first, then per category build the
detector (seeded), fit it (or reuse its fit from ``paths.fit_cache``), build the refiner (seeded again)
and the curriculum; the caller scores the images into its sink (``anorefine.run`` scores a labeled
test split, ``anorefine.inspection`` a folder of new images)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from anorefine import fits, plan
from anorefine.assembly import build_component, build_detector, device_of, is_rank_zero, trainer_factory
from anorefine.curriculum.base import Curriculum
from anorefine.data import AnomalyImageDataset
from anorefine.data.records import ImageRecord
from anorefine.datasets import build_dataset
from anorefine.detectors.base import Detector, RunPreparation
from anorefine.detectors.tiling import TiledDetector, Tiling
from anorefine.errors import AnorefineError
from anorefine.metrics.thresholds import GLOBAL_RULES
from anorefine.nodes import choice, resolved
from anorefine.refiners.base import Refiner
from anorefine.stages import StageClock

log = logging.getLogger(__name__)


class Pipeline:
    """A run's dataset, components and settings; ``cfg`` is the composed config (``prepare`` may
    replace it once, e.g. with AnomalyCLIP's trained prompt checkpoint)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.dataset = build_dataset(cfg.dataset)
        self.device = device_of(cfg.trainer)

    def check(self, categories: list[str], splits: tuple[str, ...], trains: bool = True) -> None:
        """Every check before any model is built or image decoded: the settings (``trains=False``: a
        saved state is loaded, nothing trained), the weight files, and every file of ``splits`` of every
        category (the test split also against the detector)."""
        plan.check_config(self.cfg, trains)
        plan.check_weights(self.cfg.model)
        extra = (self.threshold_split(), *self.submission_splits())
        splits = (*splits, *(split for split in extra if split and split not in splits))
        for category in categories:
            for split in splits:
                images = self.images(category, split)
                images.check_files()
                if split == "test":
                    plan.check_test_split(self.cfg.model, category, images.records)

    def images(self, category: str, split: str, clock: StageClock | None = None) -> AnomalyImageDataset:
        """The images of one split of one category (``images_of``)."""
        return self.images_of(self.dataset.records(category, split), clock)

    def threshold_split(self) -> str | None:
        """The split whose normal images set a global threshold (``eval.threshold.source``); None when
        ``eval.threshold.rule`` sets none. A split the dataset lacks fails naming the fix."""
        settings = self.cfg.eval.threshold
        if choice(settings.rule) not in GLOBAL_RULES:
            return None
        source = choice(settings.source)
        if source not in self.dataset.splits:
            raise AnorefineError(
                f"eval.threshold.source={source}: dataset={self.dataset.name} has no {source} split "
                f"(its splits: {', '.join(self.dataset.splits)}); use eval.threshold.source=train"
            )
        return source

    def submission_splits(self) -> tuple[str, ...]:
        """The unlabeled splits ``eval.submission`` writes files for (none when it is unset); a dataset
        without any fails naming the fix."""
        if not self.cfg.eval.submission:
            return ()
        if not self.dataset.unlabeled_splits:
            raise AnorefineError(
                f"eval.submission={self.cfg.eval.submission}: dataset={self.dataset.name} has no unlabeled "
                "test set to write (MVTec AD 2's private sets are); unset eval.submission"
            )
        return self.dataset.unlabeled_splits

    def normal_images(self, category: str, clock: StageClock | None = None) -> AnomalyImageDataset | None:
        """The normal images of the threshold's split (``threshold_split``), or None."""
        split = self.threshold_split()
        if split is None:
            return None
        return self.images_of([r for r in self.dataset.records(category, split) if r.label == 0], clock)

    def images_of(self, records: list[ImageRecord], clock: StageClock | None = None) -> AnomalyImageDataset:
        """``records``' images resized to the model's input size, each read charged to ``clock``'s
        ``read`` stage."""
        data = self.cfg.dataset
        return AnomalyImageDataset(records, data.image_size, data.image_resize, data.mask_resize, clock)

    def prepare(self, run_dir: Path, make_trainer: Callable[..., L.Trainer]) -> None:
        """Run the once-per-run stage the config selects (``prepare``: AnomalyCLIP's prompt training)
        and hand its file to the per-category detectors (``model.<stage.sets>``)."""
        if not self.cfg.get("prepare"):
            return
        stage: RunPreparation = build_component(self.cfg.prepare)
        settings = resolved(self.cfg.model)
        workers = int(self.cfg.dataset.num_workers)
        path = stage.prepare(settings, self.dataset, workers, run_dir, make_trainer)
        self.cfg = copy.deepcopy(self.cfg)
        self.cfg.model[stage.sets] = str(path)

    def trainers(self, logger: Logger | bool = False) -> Callable[..., L.Trainer]:
        """The run's Trainer factory (``anorefine.assembly.trainer_factory``) logging to ``logger``."""
        return trainer_factory(self.cfg.trainer, logger)

    def build_detector(self, category: str) -> Detector:
        """The detector for ``category``, built after seeding (``seed``), scoring tile by tile when
        ``eval.tiling.tile`` is set."""
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)
        detector = build_detector(self.cfg.model, self.cfg.eval.blur_padding, category, self.device)
        tiling = resolved(self.cfg.eval.tiling)
        if not tiling["tile"]:
            return detector
        return TiledDetector(detector, Tiling(**tiling)).to(self.device).eval()

    def fit(self, detector: Detector, train_set: AnomalyImageDataset, category: str) -> None:
        """Fit on the normal images, or load the state an identical earlier fit saved (``fit_cache``)."""
        cache = self.cfg.paths.get("fit_cache")
        path = None
        if cache:
            settings = resolved(self.cfg.model, enums_as_values=False)
            path = (
                Path(cache).expanduser() / fits.fit_key(settings, train_set, self.cfg.seed) / f"{category}.pt"
            )
            if path.is_file():
                log.info("detector fit of %s reused from %s", category, path)
                fits.load_fit(detector, path)
                return
        before = fits.snapshot(detector) if path else {}
        batch, workers = self.cfg.dataset.batch_size, self.cfg.dataset.num_workers
        detector.fit(DataLoader(train_set, batch_size=batch, num_workers=workers))
        if path and is_rank_zero():
            fits.save_fit(path, fits.fitted_state(detector, before))

    def build_refiner(self, detector: Detector) -> Refiner:
        """The refiner attached to ``detector``, built after seeding again: its draws depend neither on
        how many the detector's fit made nor on the refiner configured (the same base map in every row)."""
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)
        refiner: Refiner = build_component(self.cfg.refiner).to(self.device)
        refiner.attach(detector)
        return refiner

    def build_curriculum(self) -> Curriculum:
        """The curriculum that trains the refiner on the test stream (or none)."""
        return build_component(self.cfg.curriculum)
