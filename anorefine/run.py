"""The train path: per category, the pipeline's detector fitted and tested through a Lightning
Trainer with its refiner and curriculum, the maps scored; results written and printed."""

from __future__ import annotations

import functools
import json
import logging
import resource
import time
from pathlib import Path
from typing import Any, cast

import torch
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from anorefine import map_files, plan, report, viz
from anorefine.assembly import build_logger, is_rank_zero, uses_gpu
from anorefine.calibration import calibrate, sample_metrics, segmentation_scores, write_unlabeled_split
from anorefine.config import BootstrapConfig
from anorefine.curriculum.base import Curriculum
from anorefine.data.records import ImageRecord
from anorefine.metrics import category_seed
from anorefine.metrics.bootstrap import BootstrapSettings
from anorefine.metrics.breakdown import GOOD
from anorefine.metrics.multiview import SampleReduce
from anorefine.nodes import choice, component_class, resolved
from anorefine.pipeline import Pipeline
from anorefine.progress import ProgressLog
from anorefine.results import (
    assemble_results,
    category_intervals,
    compact_replicates,
    git_commit,
    percent,
    print_summary,
)
from anorefine.run_folder import MAPS_DIR, RESULTS_FILE, category_file, config_hash, write_json_atomic
from anorefine.stages import StageClock, maxrss_mb
from anorefine.task import AnomalyTask

log = logging.getLogger(__name__)


def bootstrap_settings(bootstrap: BootstrapConfig, category: str) -> BootstrapSettings | None:
    """``eval.bootstrap`` for one category (its own resample stream), or None when it is off."""
    if bootstrap.replicates == 0:
        return None
    return BootstrapSettings(
        int(bootstrap.replicates), float(bootstrap.level), category_seed(int(bootstrap.seed), category)
    )


def defect_kinds(records: list[ImageRecord]) -> list[str]:
    """Each test image's defect kind: its test sub-folder, ``good`` for every normal image."""
    return [GOOD if record.label == 0 else record.defect_type for record in records]


def peak_memory() -> dict[str, float]:
    """This process's peak resident memory so far, and its peak CUDA allocation when CUDA is up (MB)."""
    peaks = {"peak_rss_mb": maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peaks["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / (1 << 20)
    return peaks


def run_category(pipeline: Pipeline, category: str, logger: Logger | bool, run_dir: Path) -> dict[str, Any]:
    """Fit, test and score one category; returns metrics, breakdown, intervals (with the replicate
    Δs the interval of the mean needs), curriculum extras, timings and flags."""
    cfg = pipeline.cfg
    sync = functools.partial(torch.cuda.synchronize, pipeline.device) if uses_gpu(cfg.trainer) else None
    clock = StageClock(sync=sync)
    detector = pipeline.build_detector(category)
    started = time.perf_counter()
    if detector.requires_fit:
        with clock.stage("read", count=0):
            train_set = pipeline.images(category, "train", clock)
        log.info("%s: fitting %s on %d normal images", category, cfg.model.name, len(train_set))
        with clock.stage("fit", count=len(train_set)):
            pipeline.fit(detector, train_set, category)
    fitted = time.perf_counter()
    refiner = pipeline.build_refiner(detector)
    curriculum = pipeline.build_curriculum()
    with clock.stage("read", count=0):
        test_set = pipeline.images(category, "test", clock)
    bootstrap = bootstrap_settings(cfg.eval.bootstrap, category)
    maps_dir = run_dir / MAPS_DIR / category
    task = AnomalyTask(
        detector,
        refiner,
        aupro_limit=cfg.eval.aupro_limit,
        original_masks=test_set.original_mask if cfg.eval.resolution == "original" else None,
        sink=map_files.MapSaver(test_set.records, maps_dir) if cfg.eval.save_maps else None,
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
    batch_size = int(cfg.dataset.batch_size)
    extras = curriculum.evaluate(task, pipeline.trainers(logger), test_set, batch_size)
    if is_rank_zero():
        viz.write_category_figures(task, run_dir, category, logger)
    normals = pipeline.normal_images(category, clock)
    binarisation = calibrate(cfg.eval.threshold, task, normals, batch_size, pipeline.device)
    if is_rank_zero():
        for split in pipeline.submission_splits():
            written = write_unlabeled_split(
                task, pipeline.images(category, split, clock), binarisation, pipeline.dataset.root,
                Path(cfg.eval.submission).expanduser(), batch_size, pipeline.device,
            )  # fmt: skip
            log.info("%s: %d images of %s written to %s", category, written, split, cfg.eval.submission)
    extra = [functools.partial(segmentation_scores, binarisation)] if binarisation else []
    sample_score = choice(cfg.eval.sample_score)
    if sample_score != "none":
        extra.append(functools.partial(sample_metrics, test_set.records, cast(SampleReduce, sample_score)))
    scored = task.compute_all(extra)
    tested = time.perf_counter()
    refiner_timing = refiner.timing()  # per-image cost, for refiners that measure it (F2PAD)
    log_category_metrics(logger, category, scored.metrics)
    intervals = replicates = None
    if scored.deltas is not None and bootstrap is not None:
        seed = int(cfg.eval.bootstrap.seed)
        intervals = category_intervals(scored.deltas, bootstrap.replicates, seed, bootstrap.seed)
        replicates = compact_replicates(scored.deltas)
    return {
        "metrics": scored.metrics,
        "breakdown": scored.breakdown,
        "intervals": intervals,
        # the "all" view's replicate Δs, rounded: the interval of the mean over categories reads them
        "replicate_deltas": replicates,
        "curriculum": extras,
        "threshold": binarisation.record() if binarisation else None,  # eval.threshold's choice per stage
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
        "refines": not refiner.returns_base_map,
        "zero_shot": not detector.requires_fit,  # never read the category's train/ images
    }


def log_category_metrics(logger: Logger | bool, category: str, metrics: dict[str, dict[str, Any]]) -> None:
    """Send one category's metrics to the experiment logger (``<category>/<stage>/<metric>``)."""
    if isinstance(logger, Logger):
        flat = {f"{category}/{s}/{k}": v for s, values in metrics.items() for k, v in values.items()}
        logger.log_metrics({key: value for key, value in flat.items() if value is not None})


def category_seconds(entry: dict[str, Any]) -> float:
    """A finished category's fit and test time."""
    return float(entry["timings"]["fit_s"] + entry["timings"]["test_s"])


def eta(done: dict[str, dict[str, Any]], categories: list[str]) -> str:
    """``, about N s left`` from the mean time of the categories run so far (empty before the first)."""
    spent = [category_seconds(entry) for entry in done.values()]
    if not spent:
        return ""
    return f", about {sum(spent) / len(spent) * (len(categories) - len(done)):.0f} s left"


def run_experiment(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Run every category (reusing those finished in ``run_dir`` for this config); write results.json."""
    started, commit = time.perf_counter(), git_commit()  # the code this process runs, not a later HEAD
    settings = resolved(cfg)
    digest = config_hash(settings)
    pipeline = Pipeline(cfg)
    categories = pipeline.dataset.selected_categories()
    pipeline.check(
        categories, plan.splits_read(cfg.model)
    )  # every file of the run, before any model is built
    logger = build_logger(cfg.logger, run_dir)
    preparing = time.perf_counter()
    pipeline.prepare(run_dir, pipeline.trainers(logger))
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
        scored = run_category(pipeline, category, logger, run_dir)
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
    timings = {"total_s": time.perf_counter() - started + reused_s, "prepare_s": prepare_s}
    trained = component_class(cfg.curriculum, Curriculum).trains_refiner
    method = f"{cfg.refiner.name}+{cfg.curriculum.name}" if trained else cfg.refiner.name
    results = assemble_results(cfg, settings, digest, overrides, per_category, timings, method, commit)
    if isinstance(logger, Logger):
        mean = results["metrics"]["mean"]
        logger.log_metrics(
            {f"mean/{s}/{k}": v for s, values in mean.items() for k, v in values.items() if v is not None}
        )
        logger.finalize("success")
    if not is_rank_zero():  # DDP: the other processes only took part in the training stages
        return results
    report.write_report(run_dir, results)  # before results.json, which marks the run finished
    write_json_atomic(run_dir / RESULTS_FILE, results)
    print_summary(results, run_dir)
    return results
