"""Inspection mode (``mode=predict``, ``python predict.py``): score a folder of new, unlabeled images.

1. The detector is fitted on the category's normal ``train`` images (or its fit is reused from
   ``paths.fit_cache``), minus an evenly spaced ``predict.holdout`` share kept back for step 3.
2. A trainable refiner is trained by the curriculum on the unlabeled folder itself (PGT).
3. Thresholds from the held-out normal images, never from the scored ones (docs/inspection.md):
   the image threshold is the ``predict.image_quantile`` quantile of their image scores (1.0: their
   maximum, so no held-out normal image is flagged); the mask threshold is the
   ``predict.pixel_quantile`` quantile of all their refined-map pixels.
4. The fitted state (detector fit, refiner weights, thresholds, the fitting config) is saved
   weights-only in ``<run>/state``: ``predict.state=<run>`` scores another folder with it, skipping
   1-3, and gives the same maps for the same images.
5. Every image of ``predict.images`` gets ``maps/<name>.tiff`` (float32, the image's own size),
   ``masks/<name>.png``, ``overlays/<name>.png`` and a row of ``scores.csv``; with
   ``predict.watch=DIR`` instead, each image landing in DIR (``anorefine.watch``).
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from anorefine import fits, map_files
from anorefine.atomic import write_atomic
from anorefine.curriculum.base import show_reference
from anorefine.data import AnomalyImageDataset
from anorefine.data.dataset import read_rgb
from anorefine.data.records import ImageRecord, is_image_file
from anorefine.detectors.base import Detector
from anorefine.errors import AnorefineError
from anorefine.metrics.thresholds import choose_threshold
from anorefine.nodes import resolved
from anorefine.pipeline import Pipeline
from anorefine.progress import ProgressLog
from anorefine.refiners.base import Refiner, TrainableRefiner
from anorefine.results import git_commit
from anorefine.run_folder import MAPS_DIR, write_json_atomic
from anorefine.shapes import spatial_size
from anorefine.task import AnomalyTask

log = logging.getLogger(__name__)

STATE_DIR = "state"
STATE_FILE = "inspection.json"
DETECTOR_FILE = "detector.pt"
REFINER_FILE = "refiner.pt"
SCORES_FILE = "scores.csv"
MASKS_DIR, OVERLAYS_DIR = "masks", "overlays"
#: The columns of scores.csv, one row per scored image.
SCORE_COLUMNS = ("image", "score", "anomalous", "mask_share", "map", "mask", "overlay")
#: The settings of the fitting run that a reloaded state keeps (the rest comes from the new command).
FITTED_KEYS = ("model", "refiner", "dataset", "seed")


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds set on held-out normal images (see the module docstring)."""

    image: float  # an image is flagged when its score is above this
    pixel: float  # a pixel is in the mask when its refined map is above this
    floor: float  # the median normal pixel: the overlays' colour scale runs from here to ``pixel``
    normal_images: int  # how many held-out normal images set them


def folder_records(folder: Path) -> list[ImageRecord]:
    """Every image file under ``folder`` (recursive, sorted), unlabeled; its parent folder as its group."""
    if not folder.is_dir():
        raise AnorefineError(f"predict.images={folder} is not a folder: point it at the images to score")
    paths = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not paths:
        raise AnorefineError(f"predict.images={folder} holds no image files (png, jpg, bmp, tif)")
    return [unlabeled_record(path, folder) for path in paths]


def unlabeled_record(path: Path, folder: Path) -> ImageRecord:
    """The image at ``path`` below ``folder``, unlabeled; its parent folder as its group."""
    return ImageRecord(path, None, 0, path.parent.relative_to(folder).as_posix(), folder.name)


def split_holdout(records: list[ImageRecord], share: float) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(fit, held out): an evenly spaced ``share`` of the normal images (at least one) held out."""
    if not 0.0 < share < 1.0:
        raise AnorefineError(f"predict.holdout={share} must lie strictly between 0 and 1")
    count = max(1, round(share * len(records)))
    if len(records) - count < 1:
        raise AnorefineError(
            f"predict needs at least 2 normal train images to fit and hold out; found {len(records)}"
        )
    held = set(np.linspace(0, len(records) - 1, count).round().astype(int).tolist())
    return [r for i, r in enumerate(records) if i not in held], [
        r for i, r in enumerate(records) if i in held
    ]


class InspectionTask(AnomalyTask):
    """A test pass that only makes maps and hands them to its sink: nothing is scored (no labels)."""

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        base, refined, image_score = self.predict_maps(batch["image"])
        if self.sink is not None:
            self.sink(batch, base, refined, self.refiner.image_score(refined, image_score))


class NormalScores:
    """Sink that keeps the held-out normal images' refined pixel values and image scores."""

    def __init__(self) -> None:
        self.pixels: list[np.ndarray] = []
        self.scores: list[float] = []

    def __call__(
        self, batch: dict[str, Any], base: torch.Tensor, refined: torch.Tensor, score: torch.Tensor
    ) -> None:
        self.pixels.append(refined.detach().float().cpu().flatten().numpy())
        self.scores.extend(score.detach().float().cpu().tolist())

    def thresholds(self, image_quantile: float, pixel_quantile: float) -> Thresholds:
        """The ``quantile`` rule of ``anorefine.metrics.thresholds`` on the scores and on the pixels."""
        pixels = np.concatenate(self.pixels)
        return Thresholds(
            image=choose_threshold("quantile", np.asarray(self.scores), quantile=image_quantile),
            pixel=choose_threshold("quantile", pixels, quantile=pixel_quantile),
            floor=float(np.median(pixels)),
            normal_images=len(self.scores),
        )


class FolderWriter:
    """Sink that writes each scored image's map, mask and overlay and keeps its ``scores.csv`` row."""

    def __init__(self, records: list[ImageRecord], root: Path, run_dir: Path, thresholds: Thresholds) -> None:
        self.records, self.root, self.run_dir, self.thresholds = records, root, run_dir, thresholds
        self.rows: list[dict[str, Any]] = []

    def __call__(
        self, batch: dict[str, Any], base: torch.Tensor, refined: torch.Tensor, score: torch.Tensor
    ) -> None:
        for index, size, anomaly_map, image_score in zip(
            batch["index"].tolist(), batch["original_size"].tolist(), refined, score.tolist(), strict=True
        ):
            record = self.records[index]
            values = map_files.at_size(anomaly_map, tuple(size))
            mask = values > self.thresholds.pixel
            files = self.files(record)
            map_files.write_map(files["map"], values)
            map_files.write_mask(files["mask"], mask)
            image = read_rgb(record.image_path)
            map_files.write_overlay(
                files["overlay"], image, values, mask, self.thresholds.floor, self.thresholds.pixel
            )
            self.rows.append({
                "image": str(record.image_path.relative_to(self.root)),
                "score": image_score,
                "anomalous": int(image_score > self.thresholds.image),
                "mask_share": float(mask.mean()),
                **{key: str(path.relative_to(self.run_dir)) for key, path in files.items()},
            })  # fmt: skip

    def files(self, record: ImageRecord) -> dict[str, Path]:
        """The map, mask and overlay files of ``record``'s image: its path below the root, no suffix."""
        name = record.image_path.relative_to(self.root).with_suffix("")
        return {
            "map": self.run_dir / MAPS_DIR / f"{name}.tiff",
            "mask": self.run_dir / MASKS_DIR / f"{name}.png",
            "overlay": self.run_dir / OVERLAYS_DIR / f"{name}.png",
        }

    def write_csv(self, path: Path) -> None:
        """The rows in image order, written atomically."""
        write_scores(path, sorted(self.rows, key=lambda row: row["image"]))


def write_scores(path: Path, rows: list[dict[str, Any]]) -> None:
    """scores.csv: the header (``SCORE_COLUMNS``) and ``rows``, written atomically."""

    def save(temp: str) -> None:
        with open(temp, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=SCORE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(path, save)


def state_dir(path: str | Path) -> Path:
    """A predict run folder (or its ``state/``) -> its ``state/`` folder, which must hold a state."""
    folder = Path(path).expanduser()
    folder = folder if (folder / STATE_FILE).is_file() else folder / STATE_DIR
    if not (folder / STATE_FILE).is_file():
        raise AnorefineError(
            f"predict.state={path} holds no {STATE_DIR}/{STATE_FILE}: give the folder of a predict run"
        )
    return folder


def fitting_config(cfg: DictConfig) -> DictConfig:
    """``cfg``, with the fitting settings of ``predict.state`` when it is set."""
    if not cfg.predict.state:
        return cfg
    saved = json.loads((state_dir(cfg.predict.state) / STATE_FILE).read_text())["config"]
    merged = resolved(cfg)
    merged.update({key: saved[key] for key in FITTED_KEYS})
    return OmegaConf.create(merged)


def only_category(pipeline: Pipeline) -> str:
    """The one category whose normal images a predict run fits on."""
    categories = pipeline.dataset.selected_categories()
    if len(categories) != 1:
        raise AnorefineError(
            f"predict fits one category, but the dataset selects {len(categories)} "
            f"({', '.join(categories)}): set dataset.categories=[NAME]"
        )
    return categories[0]


def build_refiner_for(refiner: Refiner, detector: Detector, stream: Dataset, device: torch.device) -> None:
    """Give a lazily built refiner (ARD) its network for this detector's output, before loading weights."""
    if getattr(refiner, "is_built", True):
        return
    images = stream[0]["image"][None].to(device)
    with torch.no_grad():
        cast(TrainableRefiner, refiner).build(detector(images), spatial_size(images))  # not built: an ARD


def save_state(folder: Path, cfg: DictConfig, detector_state: dict[str, torch.Tensor], refiner: Refiner,
               thresholds: Thresholds, category: str) -> None:  # fmt: skip
    """The fitted state, weights-only (``torch.save`` of tensors) plus a JSON of what produced it."""
    fits.save_fit(folder / DETECTOR_FILE, detector_state)
    fits.save_fit(folder / REFINER_FILE, {k: v.detach().cpu() for k, v in refiner.state_dict().items()})
    write_json_atomic(folder / STATE_FILE, {
        "category": category,
        "thresholds": asdict(thresholds),
        "config": resolved(cfg),
        "git_commit": git_commit(),
    })  # fmt: skip


def load_state(
    folder: Path, detector: Detector, refiner: Refiner, stream: Dataset, device: torch.device
) -> Thresholds:
    """Load a saved state into freshly built components; returns its thresholds."""
    fits.load_fit(detector, folder / DETECTOR_FILE)
    build_refiner_for(refiner, detector, stream, device)
    weights = torch.load(folder / REFINER_FILE, map_location=device, weights_only=True)
    refiner.load_state_dict(weights)
    return Thresholds(**json.loads((folder / STATE_FILE).read_text())["thresholds"])


def saved_category(saved: Path) -> str:
    """The category a saved state (its ``state/`` folder) was fitted on."""
    return str(json.loads((saved / STATE_FILE).read_text())["category"])


def task_from_state(
    pipeline: Pipeline, saved: Path, category: str, examples: Dataset
) -> tuple[InspectionTask, Thresholds]:
    """The detector and refiner of the state in ``saved``, built by ``pipeline`` (its config from
    ``fitting_config``) and loaded, and the state's thresholds; ``examples``' first image builds a
    lazily built refiner."""
    detector = pipeline.build_detector(category)
    task = InspectionTask(detector, pipeline.build_refiner(detector))
    log.info("fitted state loaded from %s", saved)
    return task, load_state(saved, detector, task.refiner, examples, pipeline.device)


def score_stream(task: InspectionTask, trainer: L.Trainer, stream: Dataset, writer: FolderWriter,
                 batch_size: int, progress: ProgressLog | None = None) -> None:  # fmt: skip
    """The torch engine's scoring: a Lightning test pass of ``task`` over ``stream``, each batch's
    refined maps and image scores handed to ``writer``."""
    task.sink, task.progress = writer, progress
    trainer.test(task, dataloaders=DataLoader(stream, batch_size=batch_size), verbose=False)


def check_torch_engine(cfg: DictConfig) -> None:
    """The torch engine scores with the state, never with an export: refuse ``predict.onnx``."""
    if cfg.predict.onnx:
        raise AnorefineError(f"predict.onnx={cfg.predict.onnx} is set: add predict.engine=onnx to use it")


def images_folder(cfg: DictConfig) -> Path:
    """``predict.images``, which must be set (both engines score it)."""
    if not cfg.predict.images:
        raise AnorefineError("predict.images is not set: predict.images=DIR (the folder of images to score)")
    return Path(cfg.predict.images).expanduser()


def run_inspection(cfg: DictConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Fit (or load), calibrate and score ``predict.images``; returns the rows of scores.csv."""
    images_root = images_folder(cfg)
    check_torch_engine(cfg)
    cfg = fitting_config(cfg)
    saved = state_dir(cfg.predict.state) if cfg.predict.state else None
    pipeline = Pipeline(cfg)
    stream = pipeline.images_of(folder_records(images_root))
    category = saved_category(saved) if saved else only_category(pipeline)
    pipeline.check([] if saved else [category], ("train",), trains=saved is None)  # the fit's images
    stream.check_files()
    if saved is not None:
        task, thresholds = task_from_state(pipeline, saved, category, stream)
        show_reference(task, stream)
    else:
        pipeline.prepare(run_dir, pipeline.trainers())
        detector = pipeline.build_detector(category)
        held_out, detector_state = fit_for_predict(pipeline, detector, category)
        task = InspectionTask(detector, pipeline.build_refiner(detector))
        thresholds = train_and_calibrate(pipeline, task, held_out, stream)
        save_state(run_dir / STATE_DIR, pipeline.cfg, detector_state, task.refiner, thresholds, category)
    writer = FolderWriter(stream.records, images_root, run_dir, thresholds)
    progress = ProgressLog(log, f"{category}: scoring", len(stream), "images")
    score_stream(task, pipeline.trainers()(), stream, writer, int(cfg.dataset.batch_size), progress)
    writer.write_csv(run_dir / SCORES_FILE)
    report(writer.rows, thresholds, run_dir, saved)
    return writer.rows


def fit_for_predict(
    pipeline: Pipeline, detector: Detector, category: str
) -> tuple[list[ImageRecord], dict[str, torch.Tensor]]:
    """Step 1 of the module docstring: fit on the category's normal images but the held-out share;
    returns the held-out records (every normal image when nothing is fitted) and the fitted state."""
    normals = pipeline.dataset.records(category, "train")
    if not detector.requires_fit:
        return normals, {}
    fit_records, held_out = split_holdout(normals, float(pipeline.cfg.predict.holdout))
    before = fits.snapshot(detector)
    fit_set = pipeline.images_of(fit_records)
    log.info("%s: fitting %s on %d normal images", category, pipeline.cfg.model.name, len(fit_set))
    pipeline.fit(detector, fit_set, category)
    return held_out, fits.fitted_state(detector, before)


def train_and_calibrate(
    pipeline: Pipeline, task: InspectionTask, held_out: list[ImageRecord], stream: AnomalyImageDataset
) -> Thresholds:
    """Steps 2-3 of the module docstring: train the refiner on the stream, set the thresholds on the
    held-out normal images."""
    cfg = pipeline.cfg
    make_trainer = pipeline.trainers()
    batch_size = int(cfg.dataset.batch_size)
    curriculum = pipeline.build_curriculum()
    if curriculum.trains_refiner:
        log.info("training refiner=%s on the %d unlabeled images (curriculum=%s)",
                 cfg.refiner.name, len(stream), cfg.curriculum.name)  # fmt: skip
        curriculum.evaluate(task, make_trainer, stream, batch_size)
    show_reference(task, stream)
    collector = NormalScores()
    task.sink = collector
    calibration = pipeline.images_of(held_out)
    make_trainer().test(task, dataloaders=DataLoader(calibration, batch_size=batch_size), verbose=False)
    return collector.thresholds(float(cfg.predict.image_quantile), float(cfg.predict.pixel_quantile))


def report(rows: list[dict[str, Any]], thresholds: Thresholds, run_dir: Path, loaded: Path | None) -> None:
    """Print how many images were flagged, per subfolder, and where the files and the state are."""
    flagged = Counter(str(Path(row["image"]).parent) for row in rows if row["anomalous"])
    total = Counter(str(Path(row["image"]).parent) for row in rows)
    print(
        f"flagged {sum(flagged.values())} of {len(rows)} images (image score > {thresholds.image:.4g}, "
        f"set on {thresholds.normal_images} held-out normal images; masks: map > {thresholds.pixel:.4g})"
    )
    if len(total) > 1:
        for folder in sorted(total):
            print(f"  {folder}: {flagged[folder]} of {total[folder]}")
    state = f"state loaded from {loaded}" if loaded else f"reuse the fit with predict.state={run_dir}"
    print(f"maps, masks, overlays and {SCORES_FILE} in {run_dir}; {state}")
