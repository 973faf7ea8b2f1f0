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

results.json (``format`` 3; readers accept format 2, which lacks ``breakdown`` and ``intervals``, and
earlier files without the field). Metrics are fractions (not percent); ``<m>`` is a ``METRIC_KEYS``
dict of a map, ``None`` where undefined::

    metrics:    {<c> | "mean": {"base": <m>, "refined": <m>}}
    breakdown:  null (eval.breakdown=false) | {<c> | "mean": {
                  "kinds": {<kind>: {"images": good + that kind's images, "defective": that kind's,
                                     "base": <m>, "refined": <m>}},
                  "sizes": {"small" | "medium" | "large": {"label": "<0.1%" | "0.1-1%" | ">1%",
                                     "regions": R, "pixels": P, "base": {pixel_auroc, pixel_ap, aupro},
                                     "refined": {...}}}}}
    intervals:  null (eval.bootstrap.replicates=0, or no category has a refined map of its own) |
                {<c> | "mean": {"level": 0.95, "replicates": 1000, "seed": eval.bootstrap.seed,
                  "delta": {<k>: {"low", "high", "contains_zero", "valid"}},
                  "kinds": {<kind>: {<k>: {...}}}, "sizes": {<bin>: {<k>: {...}}}}}

- A kind's metrics are those of the good images plus that kind's images, ``boundary_f1`` excepted
  (``None``: per kind it would cost more than the rest together); ``kinds`` is empty for a category
  whose images' kinds are unknown or that has no defective image. A size bin holds the GT regions
  (8-connected) whose area is that share of their image; its positives are those regions' pixels,
  its negatives all normal pixels; ``sizes`` is empty without pixel metrics (an image without a
  mask, no GT region), and a bin without regions has ``None`` metrics. The ``mean`` entry averages,
  per kind, the categories that have that kind and, per bin, those with regions in it
  (``categories`` names them; ``images``, ``defective``, ``regions`` and ``pixels`` are summed).
- ``<k>``: the ``INTERVAL_KEYS`` whose Δ = refined − base is defined in some replicate; the
  interval is the percentile interval at ``level`` of the ``valid`` replicate Δs (a resample without
  a defective image has none), ``contains_zero`` is ``low <= 0 <= high``. A category's entry also
  has ``stream``, the seed of its own resample stream (``category_seed(seed, c)``); a category
  without any defined Δ (no defective image) has an empty ``delta``. The ``mean`` entry is the
  interval of the mean Δ over categories (each category resampled on its own, replicate Δs
  averaged), listed in ``categories``; its ``kinds`` and ``sizes`` are empty (only the ``all``
  view's replicates are kept per category).
- ``categories/<c>.json`` holds what ``run_category`` returned: the category's ``metrics``,
  ``breakdown``, ``intervals`` and ``replicate_deltas`` (``{<k>: [Δ per replicate, 6 decimals, null
  when undefined]}``, the ``all`` view, which the interval of the mean reads, so that a resumed run
  gives the same one), ``curriculum``, ``timings`` (``metrics_s``, ``breakdown_s`` and
  ``bootstrap_s``, parts of ``test_s``, among them; ``stages``, per stage ``{"seconds", "count"}``
  (``anorefine.stages``); ``peak_rss_mb`` and, with CUDA, ``cuda_max_allocated_mb``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from anorefine.atomic import write_atomic
from anorefine.metrics.names import STAGES

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
#: Version of the results.json layout (``format``); 2 added the field and the neutral-free hash, 3 the
#: ``breakdown`` and the ``intervals`` (see the module docstring).
RESULTS_FORMAT = 3

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


#: A JSON list of numbers (or nulls) as ``json.dumps(indent=2)`` spreads it, one item a line.
_NUMBER_LIST = re.compile(r"\[\s+((?:-?[0-9][0-9.eE+-]*|null)(?:,\s+(?:-?[0-9][0-9.eE+-]*|null))*)\s+\]")


def write_json_atomic(path: Path, payload: dict[str, Any], flat_number_lists: bool = False) -> None:
    """Write JSON through a temporary file in the same folder, then rename: never a half file.
    ``flat_number_lists``: lists of numbers on one line (the replicate Δs of a category file)."""
    text = json.dumps(payload, indent=2, sort_keys=False, allow_nan=False) + "\n"
    if flat_number_lists:
        text = _NUMBER_LIST.sub(lambda found: "[" + re.sub(r",\s+", ", ", found.group(1)) + "]", text)
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
            _check_numbers(values, f"metrics[{category!r}][{stage!r}]")
    breakdown = results.get("breakdown")
    if breakdown is not None:
        _check_breakdown(breakdown)
    intervals = results.get("intervals")
    if intervals is not None:
        _check_intervals(intervals)


def _check_numbers(values: Any, where: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{where} is not an object")
    for key, value in values.items():
        if value is not None and not isinstance(value, int | float):
            raise ValueError(f"{where}[{key!r}] is not a number")


def _check_breakdown(breakdown: Any) -> None:
    if not isinstance(breakdown, dict):
        raise ValueError("breakdown is not an object")
    for category, entry in breakdown.items():
        for part in ("kinds", "sizes"):
            found = entry.get(part, {}) if isinstance(entry, dict) else None
            if not isinstance(found, dict):
                raise ValueError(f"breakdown[{category!r}][{part!r}] is not an object")
            for name, values in found.items():
                for stage in STAGES:
                    _check_numbers(
                        values.get(stage), f"breakdown[{category!r}][{part!r}][{name!r}][{stage!r}]"
                    )


def _check_interval(record: Any, where: str) -> None:
    if not isinstance(record, dict) or not all(
        isinstance(record.get(k), int | float) for k in ("low", "high")
    ):
        raise ValueError(f"{where} has no numeric low and high")
    if record["low"] > record["high"]:
        raise ValueError(f"{where}: low > high")


def _check_intervals(intervals: Any) -> None:
    if not isinstance(intervals, dict):
        raise ValueError("intervals is not an object")
    for category, entry in intervals.items():
        where = f"intervals[{category!r}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("delta"), dict):
            raise ValueError(f"{where} has no delta")
        for key, record in entry["delta"].items():
            _check_interval(record, f"{where}['delta'][{key!r}]")
        for part in ("kinds", "sizes"):
            for name, records in (entry.get(part) or {}).items():
                for key, record in records.items():
                    _check_interval(record, f"{where}[{part!r}][{name!r}][{key!r}]")


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


#: Job keys longer than this are cut and carry a hash of the full override string.
MAX_KEY_LENGTH = 160
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]")


#: Where one ``key=value`` of Hydra's ``override_dirname`` ends: a comma that starts the next key.
_NEXT_OVERRIDE = re.compile(r",(?=[+~]?[\w./@-]+=)")


def job_key(override_dirname: str) -> str:
    """Filename-safe folder name of a job from its sorted overrides (``default`` when there are none).

    Settings that change no number (``NEUTRAL_KEYS``, groups included: ``paths.fit_cache``) are
    dropped, so a re-run with another logger or cache lands in the same folder. Safe, short strings are
    kept as they are; otherwise unsafe characters become ``_``, the name is cut to ``MAX_KEY_LENGTH``
    and a hash of the original string keeps distinct jobs apart.
    """
    items = _NEXT_OVERRIDE.split(override_dirname)
    override_dirname = ",".join(i for i in items if i and not is_neutral(i.split("=")[0]))
    if not override_dirname:
        return "default"
    safe = _UNSAFE.sub("_", override_dirname)
    if safe == override_dirname and len(safe) <= MAX_KEY_LENGTH:
        return safe
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:8]
    return f"{safe[:MAX_KEY_LENGTH].rstrip('_,')}-{digest}"
