"""Assembly: components from their config nodes, the device, the logger and the Lightning Trainers
every stage of train and predict shares (no stage logic here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import (
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from anorefine import console
from anorefine.config import LoggerConfig, TrainerConfig, is_multiprocess
from anorefine.data.records import BlurPadding
from anorefine.detectors.base import Detector
from anorefine.errors import AnorefineError
from anorefine.nodes import choice, resolved
from anorefine.run_folder import LOGS_DIR

#: What a Trainer is for: ``fit`` trains (PGT, prompt training; spans every DDP process), ``evaluate``
#: tests or predicts in the calling process.
Purpose = Literal["fit", "evaluate"]


def build_component(node: DictConfig) -> Any:
    """Instantiate a config node with a ``_target_``; its ``name`` is metadata, not an argument."""
    params = resolved(node)
    params.pop("name", None)
    try:
        return instantiate(params, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, AnorefineError):  # surface our one-line error, not Hydra's wrapper
            raise error.__cause__ from None
        raise


def build_logger(settings: LoggerConfig, run_dir: Path) -> Logger | bool:
    """The experiment logger ``logger`` asks for (False: none)."""
    name = settings.name
    if name == "csv":
        return CSVLogger(save_dir=str(run_dir), name=LOGS_DIR, version="")
    if name == "wandb":
        return WandbLogger(project=settings.project, save_dir=str(run_dir), mode=settings.mode)
    if name == "none":
        return False
    raise AnorefineError(f"logger.name={name!r} is unknown: use logger=csv, logger=wandb or logger=none")


def local_rank() -> int:
    """This process's rank on its machine, from Lightning's cluster environment (0 without DDP)."""
    for environment in (SLURMEnvironment, TorchElasticEnvironment):
        if environment.detect():
            return environment().local_rank()
    return LightningEnvironment().local_rank()


def is_rank_zero() -> bool:
    """True in the one process that writes the run's files (every process without DDP)."""
    return getattr(rank_zero_only, "rank", 0) == 0  # set by Lightning on the function object


def uses_gpu(trainer: TrainerConfig) -> bool:
    """True when the trainer's accelerator is a CUDA GPU."""
    return trainer.accelerator in ("gpu", "cuda")


def device_of(trainer: TrainerConfig) -> torch.device:
    """The torch device matching the trainer's accelerator (this process's GPU under DDP)."""
    return torch.device("cuda", local_rank()) if uses_gpu(trainer) else torch.device("cpu")


def build_detector(
    model: DictConfig, blur_padding: BlurPadding, category: str, device: torch.device
) -> Detector:
    """The ``model`` node's detector on ``device``, in eval mode, with the protocol's blur border
    (``eval.blur_padding``), set up for ``category`` (not fitted yet)."""
    detector: Detector = build_component(model).to(device).eval()
    detector.baseline = detector.baseline._replace(padding=cast(BlurPadding, choice(blur_padding)))
    detector.setup_category(category)
    return detector


def trainer_factory(trainer: TrainerConfig, logger: Logger | bool) -> Callable[..., L.Trainer]:
    """Builds Lightning Trainers that share the run's device, precision, logger and progress bar.

    Under a multi-process strategy only ``purpose="fit"`` trainers span the processes. Evaluation
    trainers run in the calling process on its own device: every process scores each test image once
    with its own metric states (no padded DistributedSampler, no gathered states), and only rank
    zero writes files.
    """

    def make_trainer(purpose: Purpose = "evaluate", **overrides: Any) -> L.Trainer:
        settings = {
            "accelerator": trainer.accelerator,
            "devices": trainer.devices,
            "precision": trainer.precision,
            "strategy": trainer.strategy,
            "logger": logger,
            "enable_progress_bar": console.shows_progress_bars(trainer.enable_progress_bar),
            "enable_checkpointing": False,
            "enable_model_summary": False,
        }
        if purpose == "fit":
            settings.update(max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0)
        elif is_multiprocess(trainer):
            settings.update(strategy="auto", devices=[local_rank()] if uses_gpu(trainer) else 1)
        return L.Trainer(**{**settings, **overrides})

    return make_trainer
