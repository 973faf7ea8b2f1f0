"""The cost of a full paper table projected from a rehearsal (``make rehearse``, scripts/rehearse.py).

A rehearsal runs each job of a preset on one stand-in category with small budgets (``BUDGETS``) and
records its stage timings (``anorefine.stages``). A job's projected seconds on the same machine are

    fixed + prepare × S_real / S_rehearsal
          + Σ over the dataset's categories c of Σ over stages of seconds × scale(stage, c) + other

where ``fixed`` is the job's wall time outside its categories and prepare stage (start-up, checks),
S the prompt-training steps of AnomalyCLIP's prepare stage, ``other`` a category's time outside its
stages and metrics (kept as measured), and scale: for ``fit`` the ratio of train images (times the
ratio of each budget setting that grows it, CFLOW's epochs), for ``read`` of all images read (train
and test for a detector that fits, test otherwise), for ``reference`` its square (a transductive
detector, MuSc, scores every test image against all the others there), for ``reference_features``,
``detector_maps``, ``refine`` and the metrics of test images, for a PGT stage the ratio of training
rounds (groups − 1, at least 1) times the ratio of the budget setting it grows with.

The GPU figure (``device_speedup``) is an estimate, not a measurement: the stages that run on the run's
device (``DEVICE_STAGES`` and the prepare stage) are divided by the ratio of an assumed GPU throughput
(``ASSUMED_GPU``) to this machine's measured float32 matrix-product throughput (``gemm_flops``); the
reading, PGT's synthesis (numpy painting), the metrics and the rest keep their CPU seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from anorefine.data.layouts import CategoryLayout


@dataclass(frozen=True)
class Budget:
    """A setting a rehearsal lowers in every job whose config has it, and the stages it scales."""

    key: str
    rehearsal: int
    quick: int
    stages: tuple[str, ...] = ()


#: The rehearsal's budgets (``--quick``: the smallest); the full run's values come from the job's config.
BUDGETS: tuple[Budget, ...] = (
    Budget("curriculum.group_size", 2, 2, ("pgt_pool",)),
    Budget("curriculum.steps_per_group", 2, 1, ("pgt_train",)),
    Budget("curriculum.synthetic_per_group", 2, 2, ("pgt_synthesis", "pgt_detector_maps")),
    Budget("model.epochs", 1, 1, ("fit",)),  # CFLOW-AD's training epochs
    Budget("prepare.epochs", 1, 1),  # AnomalyCLIP's prompt training, projected by its steps
    Budget("prepare.max_steps", 1, 1),
)
PGT_STAGES = ("pgt_pool", "pgt_synthesis", "pgt_detector_maps", "pgt_train")
#: Stages that run on the run's device (a GPU with trainer=gpu): the model's forward and backward passes.
DEVICE_STAGES = frozenset(
    {"fit", "reference_features", "reference", "detector_maps", "refine", "pgt_pool", "pgt_detector_maps",
     "pgt_train"}
)  # fmt: skip
#: The GPU the estimate assumes and the dense throughput it is assumed to sustain: 15 % of an H100's
#: 989 TFLOP/s bf16 peak (trainer.precision=bf16-mixed), an assumption, not a measurement.
ASSUMED_GPU = ("one H100 at 150 TFLOP/s sustained", 150e12)
#: The metric passes of a category's timings, scaled with its test images.
METRIC_TIMINGS = ("metrics_s", "breakdown_s", "bootstrap_s")


@dataclass(frozen=True)
class Population:
    """A category's train and test image counts."""

    train: int
    test: int

    @classmethod
    def of(cls, layout: CategoryLayout) -> Population:
        return cls(layout.train_good, layout.test_good + layout.test_defective)


def has_setting(cfg: DictConfig, key: str) -> bool:
    """True when the dotted ``key`` exists in ``cfg`` (its value may be null)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node


def prompt_steps(cfg: DictConfig, aux_test_images: int) -> int:
    """Optimiser steps of AnomalyCLIP's prompt training: epochs × batches, capped by ``max_steps``."""
    prepare = cfg.prepare
    steps = prepare.epochs * math.ceil(aux_test_images / prepare.batch_size)
    return steps if prepare.max_steps is None else min(steps, prepare.max_steps)


def pgt_rounds(test_images: int, group_size: int) -> int:
    """PGT's training rounds on a category (progressive mode: every group but the last, at least one)."""
    return max(1, math.ceil(test_images / group_size) - 1)


def stage_scale(
    stage: str, real_cfg: DictConfig, run_cfg: DictConfig, real: Population, measured: Population, fits: bool,
    transductive: bool,
) -> float:  # fmt: skip
    """How much longer ``stage`` takes on a real category than it took in the rehearsal."""
    budgets = math.prod(
        OmegaConf.select(real_cfg, b.key) / OmegaConf.select(run_cfg, b.key)
        for b in BUDGETS
        if stage in b.stages and has_setting(run_cfg, b.key)
    )
    if stage in PGT_STAGES:
        size = "curriculum.group_size"
        rounds = pgt_rounds(real.test, OmegaConf.select(real_cfg, size))
        return budgets * rounds / pgt_rounds(measured.test, OmegaConf.select(run_cfg, size))
    test = real.test / measured.test
    if stage == "fit":
        return budgets * real.train / measured.train
    if stage == "read" and fits:
        return (real.train + real.test) / (measured.train + measured.test)
    if stage == "reference" and transductive:
        return test**2
    return test


def gemm_flops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-product throughput (FLOP/s, best of ``repeats``) with torch's
    threads: the CPU side of the GPU estimate's ratio."""
    import time

    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def project_category(
    timing: dict[str, Any], real_cfg: DictConfig, run_cfg: DictConfig, real: Population, measured: Population,
    fits: bool, transductive: bool, device_speedup: float = 1.0,
) -> float:  # fmt: skip
    """Projected seconds of one real category from one rehearsed category's ``timings`` entry (the
    device stages divided by ``device_speedup``)."""
    stages = timing.get("stages", {})
    metrics = sum(timing.get(key, 0.0) for key in METRIC_TIMINGS)
    other = max(
        0.0, timing["fit_s"] + timing["test_s"] - metrics - sum(s["seconds"] for s in stages.values())
    )
    scaled = sum(
        entry["seconds"]
        * stage_scale(name, real_cfg, run_cfg, real, measured, fits, transductive)
        / (device_speedup if name in DEVICE_STAGES else 1.0)
        for name, entry in stages.items()
    )
    return scaled + metrics * real.test / measured.test + other


def project_job(
    results: dict[str, Any], wall_s: float, real_cfg: DictConfig, layouts: Iterable[CategoryLayout],
    measured: Population, transductive: bool, prepare_steps: tuple[int, int] | None = None,
    device_speedup: float = 1.0,
) -> float:  # fmt: skip
    """Projected seconds of a job over every category of its real dataset (``layouts``), from the
    rehearsal's ``results`` of one category; ``prepare_steps``: (real, rehearsal) prompt steps;
    ``device_speedup``: how much faster the device stages and the prepare stage run (1: this machine)."""
    run_cfg = OmegaConf.create(results["config"])
    timings = results["timings"]
    (timing,) = timings["per_category"].values()
    prepare = timings.get("prepare_s", 0.0)
    fixed = max(0.0, wall_s - prepare - timing["fit_s"] - timing["test_s"])
    if prepare_steps:
        prepare *= prepare_steps[0] / prepare_steps[1]
    prepare /= device_speedup
    fits = not results["zero_shot"]
    return (
        fixed
        + prepare
        + sum(
            project_category(
                timing, real_cfg, run_cfg, Population.of(layout), measured, fits, transductive, device_speedup
            )
            for layout in layouts
        )
    )
