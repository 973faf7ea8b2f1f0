"""The run folder: its file names, the results.json format, and the settings that change no number.

Every module that writes or reads a run (run, sweep, leaderboard, report, evaluate, fits) takes its
names from here, so a run folder has one definition:

    <run>/results.json           the run's results (``RESULTS_FORMAT``), written last and atomically
    <run>/categories/<c>.json    one per finished category (resume)
    <run>/failure.json           a failed job (error, traceback, overrides)
    <run>/report.html, figures/  the visual report
    <run>/logs/                  the CSV logger's metrics.csv
    <run>/maps/                  the maps as TIFFs (eval.save_maps); predict runs: docs/inspection.md
    <sweep>/sweep.json           the jobs a sweep will launch; Hydra writes <sweep>/multirun.yaml
    <root>/LEADERBOARD.{md,csv,tex}

``NEUTRAL_KEYS`` are the settings that change no number (where files live, how progress is shown,
which logger records it): they name no job folder, enter no config hash and tell no leaderboard
rows apart.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from anorefine.atomic import write_atomic

RESULTS_FILE = "results.json"
FAILURE_FILE = "failure.json"
CATEGORY_DIR = "categories"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
#: Anomaly maps as float32 TIFFs (``eval.save_maps``; every predict run).
MAPS_DIR = "maps"
LOGS_DIR = "logs"
#: The jobs a sweep will launch, written by ``anorefine.sweep.SweepCallback`` into the sweep folder.
MANIFEST_FILE = "sweep.json"
#: Hydra's record of a sweep, in the sweep folder.
SWEEP_CONFIG_FILE = "multirun.yaml"
LEADERBOARD_NAME = "LEADERBOARD"
#: Version of the results.json layout (``format``); 2 added the field and the neutral-free hash.
RESULTS_FORMAT = 2

#: The two maps every run scores: the detector's baseline map and the refiner's map.
STAGES = ("base", "refined")
#: Every metric of results.json, in table order.
METRIC_KEYS = (
    "image_auroc",
    "image_ap",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "pixel_iou_max",
    "boundary_f1",
    "aupro",
    "pro_compat",
)
#: Settings that change no number (a key, or a group whose every key is neutral).
NEUTRAL_KEYS = (
    "experiment",
    "verbose",
    "logger",
    "trainer.enable_progress_bar",
    "paths",
    "dataset.root",
    "dataset.num_workers",
    "eval.save_maps",
    "mode",
    "predict",
)


def musc_mask_rule(dataset: str) -> str:
    """MuSc's mask rule per dataset (protocol=musc): > 0 on VisA, exactly 1 on the MVTec layouts."""
    return "nonzero" if dataset == "visa" else "full"


if not OmegaConf.has_resolver("anorefine.musc_mask_rule"):  # conf/protocol/musc.yaml
    OmegaConf.register_new_resolver("anorefine.musc_mask_rule", musc_mask_rule)
if not OmegaConf.has_resolver("anorefine.neutral_keys"):  # conf/train.yaml: the keys no job folder names
    OmegaConf.register_new_resolver("anorefine.neutral_keys", lambda: list(NEUTRAL_KEYS))


def is_neutral(key: str) -> bool:
    """True for a setting (dotted key, ``+``/``~`` prefixes allowed) that changes no number."""
    key = key.lstrip("+~")
    return any(key == neutral or key.startswith(f"{neutral}.") for neutral in NEUTRAL_KEYS)


def numbers_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without its neutral settings: what the numbers depend on."""

    def prune(node: Any, prefix: str) -> Any:
        if not isinstance(node, dict):
            return node
        return {k: prune(v, f"{prefix}{k}.") for k, v in node.items() if not is_neutral(f"{prefix}{k}")}

    return prune(resolved, "")


def config_hash(resolved: dict[str, Any]) -> str:
    """Stable short hash of what a resolved config's numbers depend on (keys sorted)."""
    blob = json.dumps(numbers_config(resolved), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def category_file(run_dir: Path, category: str) -> Path:
    """Where a finished category's results live (resume)."""
    return run_dir / CATEGORY_DIR / f"{category}.json"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file in the same folder, then rename: never a half file."""
    text = json.dumps(payload, indent=2, sort_keys=False, allow_nan=False) + "\n"
    write_atomic(path, lambda temp: Path(temp).write_text(text))


def validate_results(results: Any) -> None:
    """Raise ValueError naming what a results.json lacks."""
    if not isinstance(results, dict):
        raise ValueError("not a JSON object")
    for key in ("dataset", "model", "refiner", "metrics", "categories"):
        if key not in results:
            raise ValueError(f"no {key!r}")
    for category in [*results["categories"], "mean"]:
        for stage in STAGES:
            values = results["metrics"].get(category, {}).get(stage)
            if not isinstance(values, dict):
                raise ValueError(f"no metrics[{category!r}][{stage!r}]")
            for key, value in values.items():
                if value is not None and not isinstance(value, int | float):
                    raise ValueError(f"metrics[{category!r}][{stage!r}][{key!r}] is not a number")


def read_results(run_dir: Path) -> dict[str, Any]:
    """A run's results.json, validated (ValueError / OSError when it is missing or malformed)."""
    results = json.loads((run_dir / RESULTS_FILE).read_text())
    validate_results(results)
    return results


def is_finished(run_dir: Path, digest: str) -> bool:
    """True when ``run_dir`` holds a readable results.json whose config hash is ``digest``."""
    try:
        return json.loads((run_dir / RESULTS_FILE).read_text()).get("config_hash") == digest
    except (OSError, ValueError, AttributeError):
        return False
