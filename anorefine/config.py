"""Config schemas: the run-level ones (types only: every value lives in conf/) and the derived ones.

Run-level settings (paths, dataset, trainer, logger, eval) are typed here and valued in YAML
(conf/paths, conf/common, conf/dataset, conf/trainer, conf/logger, conf/train.yaml); a component's
schema is derived from its constructor (``anorefine.settings``). Closed choices are Enums, so a
misspelt key, a wrong type or an unknown choice fails when Hydra composes the config, before any
data is read. This module imports no torch: composing a config takes a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, get_args

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from anorefine.conf import CONF_DIR
from anorefine.data import records
from anorefine.metrics.names import THRESHOLD_RULES, THRESHOLD_SOURCES
from anorefine.resolvers import register_resolvers
from anorefine.settings import (
    encoded,
    publish,
    register_component_schemas,
    schema_fields,
    signature_settings,
    yaml_target,
)

EVAL_RESOLUTIONS = ("input", "original")
LOGGERS = ("csv", "wandb", "none")


def run_choice(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A str Enum of a run-level setting's allowed values, importable as ``anorefine.config.<name>``."""
    return enum.Enum(name, {v: v for v in values}, type=str, module=__name__)  # type: ignore[return-value]  # Enum()'s functional form


ImageResize = run_choice("ImageResize", get_args(records.ImageResize))
MaskResize = run_choice("MaskResize", get_args(records.MaskResize))
BlurPadding = run_choice("BlurPadding", get_args(records.BlurPadding))
TilingWindow = run_choice("TilingWindow", get_args(records.TilingWindow))
#: eval.sample_score: none, or how a physical sample's view scores reduce (Real-IAD's multi-view score).
SampleScore = run_choice("SampleScore", ("none", "max", "mean"))
EvalResolution = run_choice("EvalResolution", EVAL_RESOLUTIONS)
LoggerName = run_choice("LoggerName", LOGGERS)
ThresholdRule = run_choice("ThresholdRule", THRESHOLD_RULES)
ThresholdSource = run_choice("ThresholdSource", THRESHOLD_SOURCES)
#: train: score a labeled test split; predict: score a folder of new images (anorefine.inspection).
RunMode = run_choice("RunMode", ("train", "predict"))
#: How predict scores: the PyTorch modules, or the graph ``anorefine export`` wrote, in onnxruntime.
PredictEngine = run_choice("PredictEngine", ("torch", "onnx"))


@dataclass
class PathsConfig:
    """Where data, weights, runs and fitted detectors live (conf/paths/default.yaml)."""

    data_dir: str = MISSING
    weights_dir: str = MISSING
    output_dir: str = MISSING
    fit_cache: Optional[str] = MISSING  # noqa: UP045 (OmegaConf reads the annotation at runtime)


@dataclass
class DatasetConfig:
    """One dataset: its kind, root, categories and loader settings (conf/dataset, conf/common/dataset);
    each conf/dataset option's schema extends it with its class's own settings (``dataset_schema``)."""

    _target_: str = MISSING  # its class (anorefine/datasets): categories, splits, facts
    name: str = MISSING  # the conf/dataset option
    root: str = MISSING
    categories: Optional[list[str]] = MISSING  # noqa: UP045
    defect_types: Optional[list[str]] = MISSING  # noqa: UP045
    image_size: int = MISSING
    image_resize: ImageResize = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    mask_resize: MaskResize = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    batch_size: int = MISSING
    num_workers: int = MISSING
    generation_seed: int = MISSING


#: Published names of derived dataset schemas: ``DatasetSchema__<target with __ for .>``.
DATASET_SCHEMA_PREFIX = "DatasetSchema__"


@functools.cache
def dataset_schema(target: str) -> type:
    """The schema of a ``conf/dataset`` option, stored as ``schema/dataset/<file>``: ``DatasetConfig``
    plus the constructor settings of its class that ``DatasetConfig`` lacks (Real-IAD's ``views``),
    typed and defaulted from the signature. A subclass, so it fills ``TrainConfig.dataset``."""
    shared = {f.name for f in dataclasses.fields(DatasetConfig)}
    own = [setting for setting in signature_settings(target) if setting.name not in shared]
    name = f"{DATASET_SCHEMA_PREFIX}{encoded(target)}"
    return publish(
        name, dataclasses.make_dataclass(name, schema_fields(own), bases=(DatasetConfig,)), __name__
    )


def __getattr__(name: str) -> Any:
    """A derived dataset schema by its published name, built on first use (worker processes)."""
    if name.startswith(DATASET_SCHEMA_PREFIX):
        return dataset_schema(name.removeprefix(DATASET_SCHEMA_PREFIX).replace("__", "."))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class TrainerConfig:
    """The Lightning Trainer settings of every stage (conf/common/trainer.yaml, conf/trainer)."""

    accelerator: str = MISSING
    devices: int = MISSING
    precision: str = MISSING
    strategy: str = MISSING
    enable_progress_bar: bool = MISSING


@dataclass
class LoggerConfig:
    """Experiment logger (conf/logger): csv, wandb (its project and mode) or none."""

    name: LoggerName = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    project: Optional[str] = None  # noqa: UP045 (wandb only)
    mode: Optional[str] = None  # noqa: UP045 (wandb only)


@dataclass
class BootstrapConfig:
    """Paired bootstrap intervals of refined − base over the test images (conf/train.yaml ``eval``)."""

    replicates: int = MISSING  # 0: no intervals
    level: float = MISSING
    seed: int = MISSING


@dataclass
class TilingConfig:
    """High resolution by tiling (conf/train.yaml ``eval.tiling``; anorefine.detectors.tiling): tile side
    and overlap in pixels of the dataset's image size, the blend window, tiles per detector call."""

    tile: Optional[int] = MISSING  # noqa: UP045 (null: no tiling)
    overlap: int = MISSING
    window: TilingWindow = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    batch: int = MISSING


@dataclass
class MebinConfig:
    """MEBin's settings (``eval.threshold.rule=mebin``; anorefine.metrics.thresholds)."""

    sample_rate: int = MISSING
    min_interval_len: int = MISSING
    erode: bool = MISSING
    kernel_size: int = MISSING


@dataclass
class ThresholdConfig:
    """How binary masks are set without labels (conf/train.yaml ``eval.threshold``; docs/thresholds.md)."""

    rule: ThresholdRule = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    quantile: float = MISSING
    k: float = MISSING
    source: ThresholdSource = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    mebin: MebinConfig = field(default_factory=MebinConfig)


@dataclass
class EvalConfig:
    """How maps are scored (conf/train.yaml): at the model's input size or each image's original size,
    with per-kind / per-size breakdowns, bootstrap intervals of the deltas and label-free thresholds."""

    resolution: EvalResolution = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    aupro_limit: float = MISSING
    blur_padding: BlurPadding = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    protocol: str = MISSING
    save_maps: bool = MISSING
    breakdown: bool = MISSING
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    submission: Optional[str] = MISSING  # noqa: UP045 (null: none; a folder: the unlabeled splits' files)
    sample_score: SampleScore = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)


@dataclass
class PredictConfig:
    """Inspection mode (``mode=predict``, predict.py): score a folder of new images (conf/train.yaml)."""

    images: Optional[str] = MISSING  # noqa: UP045
    state: Optional[str] = MISSING  # noqa: UP045
    holdout: float = MISSING
    image_quantile: float = MISSING
    pixel_quantile: float = MISSING
    engine: PredictEngine = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    onnx: Optional[str] = MISSING  # noqa: UP045
    watch: Optional[str] = MISSING  # noqa: UP045
    poll_s: float = MISSING
    watch_existing: bool = MISSING
    watch_max_images: Optional[int] = MISSING  # noqa: UP045
    watch_timeout_s: Optional[float] = MISSING  # noqa: UP045


@dataclass
class TrainConfig:
    """The root config of ``train.py`` (conf/train.yaml)."""

    seed: int = MISSING
    verbose: bool = MISSING
    mode: RunMode = MISSING  # type: ignore[valid-type]  # a run_choice Enum
    paths: PathsConfig = field(default_factory=PathsConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: Any = MISSING
    refiner: Any = MISSING
    curriculum: Any = MISSING
    prepare: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)


#: (group, dataclass) of the run-level schemas, stored as ``schema/<group>`` (the root as ``schema/train``).
RUN_SCHEMAS: list[tuple[str, type]] = [
    ("train", TrainConfig),
    ("paths", PathsConfig),
    ("trainer", TrainerConfig),
    ("logger", LoggerConfig),
]


def is_multiprocess(trainer: TrainerConfig) -> bool:
    """True for a trainer strategy that runs one process per device (``trainer=ddp``)."""
    return str(trainer.strategy).startswith("ddp")


def register_configs(conf_dir: Path = CONF_DIR) -> None:
    """Store every schema in Hydra's ConfigStore (run-level ones and those derived from conf/) and
    register the configs' resolvers (idempotent)."""
    register_resolvers()
    store = ConfigStore.instance()
    for group, node in RUN_SCHEMAS:
        store.store(group="schema", name=group, node=node)
    for path in sorted((conf_dir / "dataset").glob("*.yaml")):
        target = yaml_target(path)
        if target:
            store.store(group="schema/dataset", name=path.stem, node=dataset_schema(target))
    register_component_schemas(conf_dir)
