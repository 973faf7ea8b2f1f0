"""One run: per category, fit the detector, test through a Lightning Trainer, write results."""

from __future__ import annotations

import functools
import json
import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

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
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from anorefine import console, data, fits, map_files, plan, report, viz
from anorefine.config import is_multiprocess
from anorefine.curriculum.base import Curriculum
from anorefine.datasets import DatasetSource, build_dataset
from anorefine.detectors.base import Detector, RunPreparation
from anorefine.errors import AnorefineError
from anorefine.metrics import category_seed
from anorefine.metrics.breakdown import GOOD
from anorefine.progress import ProgressLog
from anorefine.refiners.base import Refiner
from anorefine.results import (
    category_intervals,
    compact_replicates,
    format_breakdowns,
    format_table,
    git_commit,
    mean_breakdown,
    mean_intervals,
    mean_metrics,
    package_versions,
)
from anorefine.run_folder import (
    LOGS_DIR,
    MAPS_DIR,
    RESULTS_FILE,
    RESULTS_FORMAT,
    STAGES,
    category_file,
    config_hash,
    write_json_atomic,
)
from anorefine.stages import StageClock, maxrss_mb
from anorefine.task import AnomalyTask, BootstrapSettings

log = logging.getLogger(__name__)
#: What a Trainer is for: ``fit`` trains (PGT, prompt training; spans every DDP process), ``evaluate``
#: tests or predicts in the calling process.
Purpose = Literal["fit", "evaluate"]


def build_component(node: DictConfig) -> Any:
    """Instantiate a config node with a ``_target_``; its ``name`` is metadata, not an argument."""
    params = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    params.pop("name", None)
    try:
        return instantiate(params, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, AnorefineError):  # surface our one-line error, not Hydra's wrapper
            raise error.__cause__ from None
        raise


def build_logger(cfg: DictConfig, run_dir: Path) -> Logger | bool:
    """The experiment logger the config asks for (False: none)."""
    name = cfg.logger.name
    if name == "csv":
        return CSVLogger(save_dir=str(run_dir), name=LOGS_DIR, version="")
    if name == "wandb":
        return WandbLogger(project=cfg.logger.project, save_dir=str(run_dir), mode=cfg.logger.mode)
    if name == "none":
        return False
    raise AnorefineError(f"logger.name={name!r} is unknown: use logger=csv, logger=wandb or logger=none")


def split_dataset(
    cfg: DictConfig, source: DatasetSource, category: str, split: str, clock: StageClock | None = None
) -> data.AnomalyImageDataset:
    """The images of one split of one category, resized to the model's input size (each read charged
    to ``clock``'s ``read`` stage)."""
    return data.AnomalyImageDataset(
        source.records(category, split),
        cfg.dataset.image_size,
        cfg.dataset.image_resize,
        cfg.dataset.mask_resize,
        clock,
    )


def local_rank() -> int:
    """This process's rank on its machine, from Lightning's cluster environment (0 without DDP)."""
    for environment in (SLURMEnvironment, TorchElasticEnvironment):
        if environment.detect():
            return environment().local_rank()
    return LightningEnvironment().local_rank()


def is_rank_zero() -> bool:
    """True in the one process that writes the run's files (every process without DDP)."""
    return rank_zero_only.rank == 0


def uses_gpu(cfg: DictConfig) -> bool:
    """True when the trainer's accelerator is a CUDA GPU."""
    return cfg.trainer.accelerator in ("gpu", "cuda")


def device_of(cfg: DictConfig) -> torch.device:
    """The torch device matching the trainer's accelerator (this process's GPU under DDP)."""
    return torch.device("cuda", local_rank()) if uses_gpu(cfg) else torch.device("cpu")


def build_detector(cfg: DictConfig, category: str) -> Detector:
    """The run's detector on its device, in eval mode, with the protocol's blur border, set up for
    ``category`` (not fitted yet)."""
    detector: Detector = build_component(cfg.model).to(device_of(cfg)).eval()
    padding = cfg.eval.blur_padding  # a str Enum member, whose str() is "BlurPadding.<name>"
    detector.baseline_padding = getattr(padding, "value", padding)
    detector.setup_category(category)
    return detector


def trainer_factory(cfg: DictConfig, logger: Logger | bool) -> Callable[..., L.Trainer]:
    """Builds Lightning Trainers that share the run's device, precision, logger and progress bar.

    Under a multi-process strategy only ``purpose="fit"`` trainers span the processes. Evaluation
    trainers run in the calling process on its own device: every process scores each test image once
    with its own metric states (no padded DistributedSampler, no gathered states), and only rank
    zero writes files (``run_experiment``).
    """

    def make_trainer(purpose: Purpose = "evaluate", **overrides: Any) -> L.Trainer:
        settings = {
            "accelerator": cfg.trainer.accelerator,
            "devices": cfg.trainer.devices,
            "precision": cfg.trainer.precision,
            "strategy": cfg.trainer.strategy,
            "logger": logger,
            "enable_progress_bar": console.shows_progress_bars(cfg.trainer.enable_progress_bar),
            "enable_checkpointing": False,
            "enable_model_summary": False,
        }
        if purpose == "fit":
            settings.update(max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0)
        elif is_multiprocess(cfg):
            settings.update(strategy="auto", devices=[local_rank()] if uses_gpu(cfg) else 1)
        return L.Trainer(**{**settings, **overrides})

    return make_trainer


def fit_detector(
    cfg: DictConfig, detector: Detector, train_set: data.AnomalyImageDataset, category: str
) -> None:
    """Fit on the normal images, or load the state an identical earlier fit saved (``paths.fit_cache``)."""
    cache = cfg.paths.get("fit_cache")
    path = None
    if cache:
        key = fits.fit_key(OmegaConf.to_container(cfg.model, resolve=True), train_set, cfg.seed)
        path = Path(cache).expanduser() / key / f"{category}.pt"
        if path.is_file():
            log.info("detector fit of %s reused from %s", category, path)
            fits.load_fit(detector, path)
            return
    before = fits.snapshot(detector) if path else {}
    loader = DataLoader(train_set, batch_size=cfg.dataset.batch_size, num_workers=cfg.dataset.num_workers)
    detector.fit(loader)
    if path and is_rank_zero():
        fits.save_fit(path, fits.fitted_state(detector, before))


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


def bootstrap_settings(cfg: DictConfig, category: str) -> BootstrapSettings | None:
    """``eval.bootstrap`` for one category (its own resample stream), or None when it is off."""
    bootstrap = cfg.eval.bootstrap
    if bootstrap.replicates == 0:
        return None
    return BootstrapSettings(
        int(bootstrap.replicates), float(bootstrap.level), category_seed(int(bootstrap.seed), category)
    )


def defect_kinds(records: list[data.ImageRecord]) -> list[str]:
    """Each test image's defect kind: its test sub-folder, ``good`` for every normal image."""
    return [GOOD if record.label == 0 else record.defect_type for record in records]


def peak_memory() -> dict[str, float]:
    """This process's peak resident memory so far, and its peak CUDA allocation when CUDA is up (MB)."""
    peaks = {"peak_rss_mb": maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peaks["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / (1 << 20)
    return peaks


def run_category(
    cfg: DictConfig, source: DatasetSource, category: str, logger: Logger | bool, run_dir: Path
) -> dict[str, Any]:
    """Fit, test and score one category; returns metrics, breakdown, intervals (with the replicate
    Δs the interval of the mean needs), curriculum extras, timings and flags."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    device = device_of(cfg)
    clock = StageClock(sync=functools.partial(torch.cuda.synchronize, device) if uses_gpu(cfg) else None)
    detector = build_detector(cfg, category)
    started = time.perf_counter()
    if detector.requires_fit:
        with clock.stage("read", count=0):
            train_set = split_dataset(cfg, source, category, "train", clock)
        log.info("%s: fitting %s on %d normal images", category, cfg.model.name, len(train_set))
        with clock.stage("fit", count=len(train_set)):
            fit_detector(cfg, detector, train_set, category)
    fitted = time.perf_counter()
    # Seeded again: the refiner's draws must not depend on how many the detector's fit made, and the
    # detector's fit must not depend on which refiner is configured (same base map in every row).
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    refiner: Refiner = build_component(cfg.refiner).to(device)
    refiner.attach(detector)
    curriculum: Curriculum = build_component(cfg.curriculum)
    with clock.stage("read", count=0):
        test_set = split_dataset(cfg, source, category, "test", clock)
    original_masks = test_set.original_mask if cfg.eval.resolution == "original" else None
    sink = map_files.MapSaver(test_set.records, run_dir / MAPS_DIR / category) if cfg.eval.save_maps else None
    bootstrap = bootstrap_settings(cfg, category)
    task = AnomalyTask(
        detector,
        refiner,
        aupro_limit=cfg.eval.aupro_limit,
        original_masks=original_masks,
        sink=sink,
        defect_kinds=defect_kinds(test_set.records).__getitem__,
        breakdown=bool(cfg.eval.breakdown),
        bootstrap=bootstrap,
        progress=ProgressLog(log, f"{category}: scoring", len(test_set), "images"),
        clock=clock,
    )
    log.info(
        "%s: fit %.1f s; testing %d images (refiner %s, curriculum %s)",
        category, fitted - started, len(test_set), cfg.refiner.name, cfg.curriculum.name,
    )  # fmt: skip
    extras = curriculum.evaluate(task, trainer_factory(cfg, logger), test_set, cfg.dataset.batch_size)
    if is_rank_zero():
        viz.write_category_figures(task, run_dir, category, logger)
    scored = task.compute_all()
    metrics = scored.metrics
    tested = time.perf_counter()
    refiner_timing = refiner.timing()  # per-image cost, for refiners that measure it (F2PAD)
    log_category_metrics(logger, category, metrics)
    intervals = replicates = None
    if scored.deltas is not None and bootstrap is not None:
        seed = int(cfg.eval.bootstrap.seed)
        intervals = category_intervals(scored.deltas, bootstrap.replicates, seed, bootstrap.seed)
        replicates = compact_replicates(scored.deltas)
    return {
        "metrics": metrics,
        "breakdown": scored.breakdown,
        "intervals": intervals,
        # the "all" view's replicate Δs, rounded: the interval of the mean over categories reads them
        "replicate_deltas": replicates,
        "curriculum": extras,
        "timings": {
            "fit_s": fitted - started,
            "test_s": tested - fitted,  # metrics_s, breakdown_s and bootstrap_s included
            "test_ms_per_image": 1000 * (tested - fitted) / len(test_set),
            **scored.seconds,
            **({"refiner": refiner_timing} if refiner_timing else {}),
            "stages": clock.as_dict(),  # exclusive seconds and count per stage (anorefine.stages)
            **peak_memory(),
        },
        "smoke_only": bool(detector.smoke_only),
        "zero_shot": not detector.requires_fit,  # never read the category's train/ images
    }


def log_category_metrics(logger: Logger | bool, category: str, metrics: dict[str, dict[str, Any]]) -> None:
    """Send one category's metrics to the experiment logger (``<category>/<stage>/<metric>``)."""
    if logger:
        flat = {f"{category}/{s}/{k}": v for s, values in metrics.items() for k, v in values.items()}
        logger.log_metrics({key: value for key, value in flat.items() if value is not None})


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def category_seconds(entry: dict[str, Any]) -> float:
    """A finished category's fit and test time."""
    return float(entry["timings"]["fit_s"] + entry["timings"]["test_s"])


def eta(done: dict[str, dict[str, Any]], categories: list[str]) -> str:
    """``, about N s left`` from the mean time of the categories run so far (empty before the first)."""
    spent = [category_seconds(entry) for entry in done.values()]
    if not spent:
        return ""
    return f", about {sum(spent) / len(spent) * (len(categories) - len(done)):.0f} s left"


def prepare_run(cfg: DictConfig, run_dir: Path, make_trainer: Callable[..., L.Trainer]) -> DictConfig:
    """Run the once-per-run stage the config selects (``prepare``: AnomalyCLIP's prompt training).

    Returns the config to build the per-category detectors from.
    """
    if not cfg.get("prepare"):
        return cfg
    stage: RunPreparation = build_component(cfg.prepare)
    return stage.prepare(cfg, run_dir, make_trainer)


def run_experiment(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Run every category (reusing those finished in ``run_dir`` for this config); write results.json."""
    started = time.perf_counter()
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    digest = config_hash(resolved)
    source = build_dataset(cfg.dataset)
    categories = source.selected_categories()
    plan.check_config(cfg)
    check_eval(cfg)
    plan.check_weights(cfg)
    for category in categories:  # every file of the run checked before any model is built
        for split in plan.splits_read(cfg):
            files = split_dataset(cfg, source, category, split)
            files.check_files()
            if split == "test":
                plan.check_test_split(cfg, category, files.records)
    logger = build_logger(cfg, run_dir)
    preparing = time.perf_counter()
    cfg = prepare_run(cfg, run_dir, trainer_factory(cfg, logger))
    prepare_s = time.perf_counter() - preparing
    per_category: dict[str, dict[str, Any]] = {}
    reused_s = 0.0
    for number, category in enumerate(categories, 1):
        log.info("category %d/%d: %s%s", number, len(categories), category, eta(per_category, categories))
        partial = category_file(run_dir, category)
        if partial.is_file() and json.loads(partial.read_text()).get("config_hash") == digest:
            log.info("category %s already finished in %s: reusing it", category, partial)
            per_category[category] = json.loads(partial.read_text())
            reused_s += category_seconds(per_category[category])
            # the logger's file starts afresh in a new process: give it the finished category again
            log_category_metrics(logger, category, per_category[category]["metrics"])
            continue
        scored = run_category(cfg, source, category, logger, run_dir)
        per_category[category] = {"config_hash": digest, **scored}
        done = per_category[category]["metrics"]
        log.info(
            "%s: done; pixel AP %s -> %s",
            category,
            percent(done["base"]["pixel_ap"]),
            percent(done["refined"]["pixel_ap"]),
        )
        if is_rank_zero():
            write_json_atomic(partial, per_category[category], flat_number_lists=True)
    metrics: dict[str, Any] = {name: entry["metrics"] for name, entry in per_category.items()}
    metrics["mean"] = {stage: mean_metrics({c: metrics[c][stage] for c in categories}) for stage in STAGES}
    if logger:
        logger.log_metrics(
            {f"mean/{s}/{k}": v for s in STAGES for k, v in metrics["mean"][s].items() if v is not None}
        )
        logger.finalize("success")
    breakdown = intervals = None
    if cfg.eval.breakdown:
        breakdown = {name: per_category[name].get("breakdown") or {} for name in categories}
        breakdown["mean"] = mean_breakdown(breakdown)
    found = {name: per_category[name].get("intervals") for name in categories}
    if any(found.values()):  # the categories with intervals, and the interval of the mean Δ
        intervals = {name: entry for name, entry in found.items() if entry}
        bootstrap = cfg.eval.bootstrap
        replicates = {name: per_category[name].get("replicate_deltas") or {} for name in categories}
        intervals["mean"] = mean_intervals(
            replicates, float(bootstrap.level), int(bootstrap.replicates), int(bootstrap.seed)
        )
    size = cfg.dataset.image_size
    results = {
        "format": RESULTS_FORMAT,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "refiner": cfg.refiner.name,
        "categories": categories,
        "metrics": metrics,
        # per category and mean: metrics per defect kind and per size bin (null: eval.breakdown=false)
        "breakdown": breakdown,
        # paired bootstrap intervals of refined - base (null: eval.bootstrap.replicates=0 or refiner=none)
        "intervals": intervals,
        "protocol": cfg.eval.protocol,  # whose evaluation (conf/protocol; default: none of the papers')
        "eval_resolution": {  # original: each image at its own size, so no single size
            "mode": cfg.eval.resolution,
            "size": [size, size] if cfg.eval.resolution == "input" else None,
        },
        "smoke_only": any(entry["smoke_only"] for entry in per_category.values()),
        "zero_shot": all(entry.get("zero_shot", False) for entry in per_category.values()),
        # per category, what the curriculum reports beside the metrics (PGT: the per-group pixel-AP curve)
        "curriculum": {name: entry.get("curriculum") or {} for name, entry in per_category.items()},
        "config": resolved,
        "config_hash": digest,
        "overrides": list(overrides),
        "timings": {
            # this process's time, plus the categories an earlier, interrupted process finished
            "total_s": time.perf_counter() - started + reused_s,
            "prepare_s": prepare_s,  # the once-per-run stage (AnomalyCLIP's prompt training; 0 without)
            "per_category": {name: entry["timings"] for name, entry in per_category.items()},
        },
        "versions": package_versions(),
        "git_commit": git_commit(),
    }
    if not is_rank_zero():  # DDP: the other processes only took part in the training stages
        return results
    report.write_report(run_dir, results)  # before results.json, which marks the run finished
    write_json_atomic(run_dir / RESULTS_FILE, results)
    print(f"metrics in %, Δ = refined − base in points ({cfg.refiner.name} over {cfg.model.name}):")
    with_delta = cfg.refiner.name != "none"
    print(format_table(metrics, with_delta=with_delta, intervals=intervals))
    breakdowns = format_breakdowns(results, with_delta)
    if breakdowns:
        print(breakdowns)
    if results["smoke_only"]:
        print("smoke-only: random weights (model.weights=random, tiny CLIP); these numbers measure nothing")
    print(f"wall time {results['timings']['total_s']:.0f} s; results: {run_dir / 'results.json'}")
    return results
