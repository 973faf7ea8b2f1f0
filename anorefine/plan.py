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

from anorefine.config import EvalConfig, TrainerConfig
from anorefine.curriculum.base import Curriculum
from anorefine.data.records import require_labeled
from anorefine.detectors.base import Detector
from anorefine.errors import AnorefineError
from anorefine.metrics.thresholds import check_mebin, check_params
from anorefine.nodes import component_class, resolved
from anorefine.refiners.base import Refiner
from anorefine.weights import RANDOM

if TYPE_CHECKING:
    from anorefine.data.records import ImageRecord


def check_components(
    refiner: DictConfig, curriculum: DictConfig, model: DictConfig, input_size: int, input_setting: str
) -> None:
    """Refiner, curriculum and sizes that fit together (reads no file): ``input_size`` is what the
    detector sees, set by ``input_setting`` (``dataset.image_size``, or ``eval.tiling.tile``)."""
    refiner_class = component_class(refiner, Refiner)
    curriculum_class = component_class(curriculum, Curriculum)
    if refiner_class.trainable and not curriculum_class.trains_refiner:
        raise AnorefineError(
            f"refiner={refiner.name} is trained on the test stream, but curriculum={curriculum.name} "
            "never trains it (every map would be the base map): add curriculum=pgt"
        )
    if curriculum_class.trains_refiner and not refiner_class.trainable:
        raise AnorefineError(
            f"curriculum={curriculum.name} trains the refiner, but refiner={refiner.name} has "
            "nothing to train: use refiner=ard, or curriculum=none"
        )
    model_size = model.get("image_size")
    if model_size is not None and int(input_size) != int(model_size):
        follows = "the dataset follows it" if input_setting == "dataset.image_size" else "or the tile"
        raise AnorefineError(
            f"{input_setting}={input_size} differs from model.image_size={model_size}: "
            f"set model.image_size ({follows})"
        )


def check_accelerator(trainer: TrainerConfig) -> None:
    """The accelerator asked for exists on this machine."""
    if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise AnorefineError(
            f"trainer.accelerator={trainer.accelerator} asks for a CUDA GPU, but torch finds none "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}): use trainer=cpu"
        )


def check_weights(model: DictConfig) -> None:
    """Every weight file the ``model`` node's detector would read exists (one line naming it and how to
    get it; ``model.weights=random`` reads no pre-trained one), and a trained state it loads
    (AnomalyCLIP's ``model.prompt_ckpt``) fits the configured detector."""
    settings = resolved(model)
    detector = component_class(model, Detector)
    if settings.get("weights") != RANDOM:
        detector.check_weights(settings)
    detector.check_files(settings)


def check_test_split(model: DictConfig, category: str, records: list[ImageRecord]) -> None:
    """Every test image labeled (metrics are computed on it), then the detector's check of the split
    (e.g. enough images for MuSc's mutual scoring)."""
    require_labeled(records)
    settings = resolved(model, enums_as_values=False)
    folders = [r.defect_type for r in records]
    component_class(model, Detector).check_test_split(settings, category, folders)


def check_model_settings(model: DictConfig, protocol: str) -> None:
    """The detector's own check of settings that must go together; a protocol (``eval.protocol``) that
    set one of them is named with the model, so the user sees which pair cannot go together."""
    settings = resolved(model)
    try:
        component_class(model, Detector).check_settings(settings)
    except AnorefineError as error:
        if protocol == "default":
            raise
        raise AnorefineError(f"protocol={protocol} with model={model.name}: {error}") from None


def check_eval(settings: EvalConfig) -> None:
    """``eval.bootstrap`` and ``eval.threshold`` within their ranges (one line naming the key otherwise)."""
    bootstrap = settings.bootstrap
    if bootstrap.replicates < 0:
        raise AnorefineError(
            f"eval.bootstrap.replicates={bootstrap.replicates}: use 0 (no intervals) or more"
        )
    if not 0.0 < bootstrap.level < 1.0:
        raise AnorefineError(f"eval.bootstrap.level={bootstrap.level} must lie strictly between 0 and 1")
    if bootstrap.seed < 0:
        raise AnorefineError(f"eval.bootstrap.seed={bootstrap.seed} must be 0 or more")
    threshold = settings.threshold
    check_params(threshold.quantile, threshold.k, prefix="eval.threshold.")
    mebin = threshold.mebin
    check_mebin(mebin.sample_rate, mebin.min_interval_len, mebin.kernel_size, prefix="eval.threshold.mebin.")


def check_config(cfg: DictConfig, trains: bool = True) -> None:
    """Every check that reads no file, each given the nodes it reads; ``trains=False`` (a saved state is
    loaded: nothing is fitted or trained) skips whether the refiner and the curriculum go together."""
    if trains:
        tile = cfg.eval.tiling.tile
        size, setting = (tile, "eval.tiling.tile") if tile else (cfg.dataset.image_size, "dataset.image_size")
        check_components(cfg.refiner, cfg.curriculum, cfg.model, size, setting)
    check_model_settings(cfg.model, cfg.eval.protocol)
    check_eval(cfg.eval)
    check_accelerator(cfg.trainer)


def splits_read(model: DictConfig) -> tuple[str, ...]:
    """The splits the run will read for each category: ``train`` only for detectors fitted on it."""
    settings = resolved(model, enums_as_values=False)
    reads_train = component_class(model, Detector).reads_train_split(settings)
    return ("test", "train") if reads_train else ("test",)
