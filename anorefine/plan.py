"""The whole run checked before any model is built or any image decoded.

The checks stop a run in seconds, with one line that names the setting or file and the fix,
where it would otherwise fail (or silently do nothing) after minutes of fitting: a trainable
refiner no curriculum trains, a curriculum with nothing to train, an image size recorded for one
component and used by another, a GPU that is not there, a missing weight file, a prompt checkpoint
that does not fit, and any selected category whose splits, masks or image files are missing,
unreadable or mismatched. Every such error is an ``AnorefineError`` (exit status 2 from ``train.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig

from anorefine.curriculum.base import Curriculum
from anorefine.data.records import require_labeled
from anorefine.detectors.base import Detector
from anorefine.errors import AnorefineError
from anorefine.nodes import component_class, resolved
from anorefine.refiners.base import Refiner
from anorefine.weights import RANDOM

if TYPE_CHECKING:
    from anorefine.data.records import ImageRecord


def check_components(cfg: DictConfig) -> None:
    """Refiner, curriculum and sizes that fit together (reads no file)."""
    refiner = component_class(cfg.refiner, Refiner)
    curriculum = component_class(cfg.curriculum, Curriculum)
    if refiner.trainable and not curriculum.trains_refiner:
        raise AnorefineError(
            f"refiner={cfg.refiner.name} is trained on the test stream, but curriculum={cfg.curriculum.name} "
            "never trains it (every map would be the base map): add curriculum=pgt"
        )
    if curriculum.trains_refiner and not refiner.trainable:
        raise AnorefineError(
            f"curriculum={cfg.curriculum.name} trains the refiner, but refiner={cfg.refiner.name} has "
            "nothing to train: use refiner=ard, or curriculum=none"
        )
    model_size = cfg.model.get("image_size")
    if model_size is not None and int(cfg.dataset.image_size) != int(model_size):
        raise AnorefineError(
            f"dataset.image_size={cfg.dataset.image_size} differs from model.image_size={model_size}: "
            "set model.image_size (the dataset follows it)"
        )


def check_accelerator(cfg: DictConfig) -> None:
    """The accelerator asked for exists on this machine."""
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise AnorefineError(
            f"trainer.accelerator={cfg.trainer.accelerator} asks for a CUDA GPU, but torch finds none "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}): use trainer=cpu"
        )


def check_weights(cfg: DictConfig) -> None:
    """Every weight file the detector would read exists (one line naming it and how to get it;
    ``model.weights=random`` reads no pre-trained one), and a trained state it loads (AnomalyCLIP's
    ``model.prompt_ckpt``) fits the configured detector."""
    settings = resolved(cfg.model)
    detector = component_class(cfg.model, Detector)
    if settings.get("weights") != RANDOM:
        detector.check_weights(settings)
    detector.check_files(settings)


def check_test_split(cfg: DictConfig, category: str, records: list[ImageRecord]) -> None:
    """Every test image labeled (metrics are computed on it), then the detector's check of the split
    (e.g. enough images for MuSc's mutual scoring)."""
    require_labeled(records)
    settings = resolved(cfg.model, enums_as_values=False)
    folders = [r.defect_type for r in records]
    component_class(cfg.model, Detector).check_test_split(settings, category, folders)


def check_model_settings(cfg: DictConfig) -> None:
    """The detector's own check of settings that must go together; a protocol that set one of them is
    named with the model, so the user sees which pair cannot go together."""
    settings = resolved(cfg.model)
    try:
        component_class(cfg.model, Detector).check_settings(settings)
    except AnorefineError as error:
        protocol = cfg.eval.protocol
        if protocol == "default":
            raise
        raise AnorefineError(f"protocol={protocol} with model={cfg.model.name}: {error}") from None


def check_eval(cfg: DictConfig) -> None:
    """``eval.bootstrap`` within its range (one line naming the key otherwise)."""
    bootstrap = cfg.eval.bootstrap
    if bootstrap.replicates < 0:
        raise AnorefineError(
            f"eval.bootstrap.replicates={bootstrap.replicates}: use 0 (no intervals) or more"
        )
    if not 0.0 < bootstrap.level < 1.0:
        raise AnorefineError(f"eval.bootstrap.level={bootstrap.level} must lie strictly between 0 and 1")
    if bootstrap.seed < 0:
        raise AnorefineError(f"eval.bootstrap.seed={bootstrap.seed} must be 0 or more")


def check_config(cfg: DictConfig, trains: bool = True) -> None:
    """Every check that reads no file; ``trains=False`` (a saved state is loaded: nothing is fitted or
    trained) skips whether the refiner and the curriculum go together."""
    if trains:
        check_components(cfg)
    check_model_settings(cfg)
    check_eval(cfg)
    check_accelerator(cfg)


def splits_read(cfg: DictConfig) -> tuple[str, ...]:
    """The splits the run will read for each category: ``train`` only for detectors fitted on it."""
    settings = resolved(cfg.model, enums_as_values=False)
    reads_train = component_class(cfg.model, Detector).reads_train_split(settings)
    return ("test", "train") if reads_train else ("test",)
