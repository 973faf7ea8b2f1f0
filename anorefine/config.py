"""Config schemas registered in Hydra's ConfigStore, so a misspelt key fails naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from anorefine.curriculum.base import SinglePassConfig
from anorefine.curriculum.pgt import PgtConfig
from anorefine.detectors.anomalyclip import AnomalyClipConfig
from anorefine.detectors.cflow import CflowConfig
from anorefine.detectors.padim import PadimConfig
from anorefine.detectors.patchcore import PatchCoreConfig
from anorefine.detectors.winclip import WinClipConfig
from anorefine.refiners.ard import ArdConfig
from anorefine.refiners.f2pad import F2padConfig
from anorefine.refiners.identity import IdentityRefinerConfig


@dataclass
class PathsConfig:
    """Where data, weights and runs live (environment variables override the defaults)."""

    data_dir: str = "${oc.env:ANOREFINE_DATA_DIR,data}"
    weights_dir: str = "${oc.env:ANOREFINE_WEIGHTS_DIR,weights}"
    output_dir: str = "outputs"
    fit_cache: str | None = "${paths.output_dir}/fits"  # fitted detector states, shared by runs (null = off)


@dataclass
class DatasetConfig:
    """One dataset: its kind, root folder, categories (null = all found) and loader settings."""

    name: str = MISSING
    root: str = MISSING
    categories: list[str] | None = None
    defect_types: list[str] | None = None  # test only these defect types (and the good images); null = all
    image_size: int = "${model.image_size}"  # type: ignore[assignment]
    batch_size: int = 16
    num_workers: int = 0
    generation_seed: int = 0


@dataclass
class TrainerConfig:
    """Arguments of the Lightning Trainer used for inference and refiner training."""

    accelerator: str = "cpu"
    devices: int = 1
    precision: str = "32-true"
    strategy: str = "auto"
    enable_progress_bar: bool = True


@dataclass
class LoggerConfig:
    """Experiment logger: csv (default), wandb, or none."""

    name: str = "csv"
    project: str = "anorefine"
    mode: str = "${oc.env:WANDB_MODE,online}"


@dataclass
class EvalConfig:
    """How maps are scored: at the model's input size or at each image's original size."""

    resolution: str = "input"
    aupro_limit: float = 0.3


@dataclass
class TrainConfig:
    """The root config of ``train.py``."""

    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: Any = MISSING
    refiner: Any = MISSING
    curriculum: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


#: (group, schema name, dataclass) of every schema a yaml file can extend in its defaults list.
SCHEMAS: list[tuple[str | None, str, type]] = [
    (None, "train_schema", TrainConfig),
    ("dataset", "dataset_schema", DatasetConfig),
    ("trainer", "trainer_schema", TrainerConfig),
    ("logger", "logger_schema", LoggerConfig),
    ("paths", "paths_schema", PathsConfig),
    ("model", "patchcore_schema", PatchCoreConfig),
    ("model", "winclip_schema", WinClipConfig),
    ("model", "anomalyclip_schema", AnomalyClipConfig),
    ("refiner", "none_schema", IdentityRefinerConfig),
    ("curriculum", "none_curriculum_schema", SinglePassConfig),
    ("refiner", "ard_schema", ArdConfig),
    ("curriculum", "pgt_schema", PgtConfig),
    ("refiner", "f2pad_schema", F2padConfig),
    ("model", "padim_schema", PadimConfig),
    ("model", "cflow_schema", CflowConfig),
]


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    for group, name, node in SCHEMAS:
        store.store(group=group, name=name, node=node)
