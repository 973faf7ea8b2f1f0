"""Run results: provenance (package versions, git commit), category means, the breakdowns' and the
intervals' JSON records (layout: ``anorefine.run_folder``), and the printed tables."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anorefine.metrics.names import INTERVAL_KEYS, METRIC_KEYS, STAGES
from anorefine.run_folder import RESULTS_FORMAT

if TYPE_CHECKING:  # the metrics import torch: the leaderboard reads this module without it
    from omegaconf import DictConfig

    from anorefine.metrics.bootstrap import DeltaReplicates

#: Digits kept of each replicate Δ in ``categories/<c>.json`` (a fraction: 1e-6 is 1e-4 points).
REPLICATE_DIGITS = 6
#: Appended to an interval that contains 0 (console, report.html, leaderboard).
CONTAINS_ZERO_MARK = "~"
#: The metrics of the per-kind and per-size console tables, in their order.
BREAKDOWN_KEYS = ("pixel_ap", "pixel_auroc", "aupro")

_VERSIONED_PACKAGES = (
    "anorefine",
    "torch",
    "lightning",
    "anomalib",
    "torchmetrics",
    "timm",
    "open_clip_torch",
)


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages whose behaviour the numbers depend on."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's processor string), for a report's machine."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def git_commit(repo_dir: Path | None = None) -> str | None:
    """The checked-out commit of the source tree, or None outside a git checkout."""
    where = repo_dir or Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def mean_metrics(per_category: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    """Unweighted mean over categories; a metric missing (None) in any category is None in the mean."""
    keys = dict.fromkeys(key for metrics in per_category.values() for key in metrics)
    mean: dict[str, float | None] = {}
    for key in keys:
        values = [metrics.get(key) for metrics in per_category.values()]
        known = [v for v in values if v is not None]
        mean[key] = None if len(known) < len(values) else sum(known) / len(known)
    return mean


def interval_record(deltas: np.ndarray, level: float) -> dict[str, Any] | None:
    """``{"low", "high", "contains_zero", "valid"}`` of replicate Δs (``valid``: the replicates where
    Δ is defined); ``None`` when none is."""
    from anorefine.metrics.bootstrap import DeltaInterval

    found = DeltaInterval.from_deltas(np.asarray(deltas, dtype=np.float64), level)
    if found.replicates == 0:
        return None
    return {
        "low": found.low,
        "high": found.high,
        "contains_zero": found.contains_zero,
        "valid": found.replicates,
    }


def _view_records(metrics: dict[str, np.ndarray], level: float) -> dict[str, dict[str, Any]]:
    records = {key: interval_record(metrics[key], level) for key in INTERVAL_KEYS if key in metrics}
    return {key: record for key, record in records.items() if record is not None}


def category_intervals(deltas: DeltaReplicates, replicates: int, seed: int, stream: int) -> dict[str, Any]:
    """One category's ``results["intervals"][c]`` from its replicate Δs (``run_folder`` docstring)."""
    views = {view: _view_records(metrics, deltas.level) for view, metrics in deltas.views.items()}
    return {
        "level": deltas.level,
        "replicates": replicates,
        "seed": seed,
        "stream": stream,
        "delta": views.get("all", {}),
        "kinds": {view.split("/", 1)[1]: v for view, v in views.items() if view.startswith("kind/") and v},
        "sizes": {view.split("/", 1)[1]: v for view, v in views.items() if view.startswith("size/") and v},
    }


def compact_replicates(deltas: DeltaReplicates) -> dict[str, list[float | None]]:
    """The ``"all"`` view's replicate Δs as JSON lists (``REPLICATE_DIGITS`` digits, ``None`` for an
    undefined Δ): what ``categories/<c>.json`` keeps for the interval of the mean."""
    metrics = deltas.views.get("all", {})
    return {
        key: [None if np.isnan(v) else round(float(v), REPLICATE_DIGITS) for v in metrics[key]]
        for key in INTERVAL_KEYS
        if key in metrics
    }


def mean_intervals(
    replicates: dict[str, dict[str, list[float | None]]], level: float, count: int, seed: int
) -> dict[str, Any]:
    """``results["intervals"]["mean"]``: the interval of the mean Δ over categories, from each
    category's replicate Δs (own stream each) averaged replicate by replicate (a stratified bootstrap).
    A metric gets one only when every category has its replicates; a replicate undefined in one
    category is undefined in the mean."""
    delta = {}
    for key in INTERVAL_KEYS:
        if replicates and all(key in per_category for per_category in replicates.values()):
            arrays = [
                np.array([np.nan if v is None else v for v in per_category[key]], dtype=np.float64)
                for per_category in replicates.values()
            ]
            record = interval_record(np.mean(arrays, axis=0), level)
            if record is not None:
                delta[key] = record
    return {
        "level": level,
        "replicates": count,
        "seed": seed,
        "categories": list(replicates),
        "delta": delta,
        "kinds": {},
        "sizes": {},
    }


def _mean_entries(entries: dict[str, dict[str, Any]], counts: tuple[str, ...]) -> dict[str, Any]:
    """The mean over categories of one kind's or size bin's entries: ``counts`` summed, each stage's
    metrics averaged (``mean_metrics``), the categories named."""
    return {
        "categories": list(entries),
        **{name: sum(entry[name] for entry in entries.values()) for name in counts},
        **{stage: mean_metrics({c: entry[stage] for c, entry in entries.items()}) for stage in STAGES},
    }


def mean_breakdown(per_category: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results["breakdown"]["mean"]``: per kind, the mean over the categories that have that kind;
    per size bin, over the categories with regions in it."""
    kinds: dict[str, dict[str, Any]] = {}
    sizes: dict[str, dict[str, Any]] = {}  # every bin in its order, empty bins included
    for category, breakdown in per_category.items():
        for kind, entry in breakdown.get("kinds", {}).items():
            kinds.setdefault(kind, {})[category] = entry
        for key, entry in breakdown.get("sizes", {}).items():
            sizes.setdefault(key, {})
            if entry["regions"]:
                sizes[key][category] = entry
    return {
        "kinds": {kind: _mean_entries(kinds[kind], ("images", "defective")) for kind in sorted(kinds)},
        "sizes": {
            key: {
                "label": next(iter(entries.values()))["label"],
                **_mean_entries(entries, ("regions", "pixels")),
            }
            for key, entries in sizes.items()
            if entries
        },
    }


def _points(value: float) -> str:
    """A Δ bound in points: two decimals below 10, one from there."""
    return f"{100 * value:+.2f}" if abs(100 * value) < 10 else f"{100 * value:+.1f}"


def interval_text(record: dict[str, Any] | None) -> str:
    """``[lo,hi]`` in points, with ``CONTAINS_ZERO_MARK`` when it contains 0; empty for none."""
    if not record:
        return ""
    mark = CONTAINS_ZERO_MARK if record["contains_zero"] else ""
    if record["low"] == record["high"] == 0:  # Δ = 0 in every resample (e.g. an unchanged image score)
        return f"[0,0]{mark}"
    return f"[{_points(record['low'])},{_points(record['high'])}]{mark}"


def _delta(base: dict[str, Any], refined: dict[str, Any], key: str) -> float | None:
    return None if base.get(key) is None or refined.get(key) is None else refined[key] - base[key]


def _render(rows: list[list[str]], left: int) -> list[str]:
    """Rows of cells as aligned lines (the first ``left`` columns left-aligned), a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            (cell.ljust(width) if i < left else cell.rjust(width))
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return lines


def format_table(
    metrics: dict[str, dict[str, dict[str, float | None]]],
    keys: tuple[str, ...] = METRIC_KEYS,
    with_delta: bool = True,
    intervals: dict[str, dict[str, Any]] | None = None,
) -> str:
    """Plain-text table in percent: per category the base and refined rows, and with ``with_delta``
    their difference (refined − base, in points). ``intervals`` (``results["intervals"]``) adds under
    each Δ row that has some a row of its bootstrap intervals in points (``interval_text``)."""
    header = ["category", "stage", *keys]
    rows = [header]

    def cells(values: list[float | None], signed: bool) -> list[str]:
        return ["-" if v is None else f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}" for v in values]

    for category, stages in metrics.items():
        for stage in STAGES:
            rows.append([category, stage, *cells([stages[stage].get(k) for k in keys], signed=False)])
        if with_delta:
            deltas = [_delta(stages["base"], stages["refined"], k) for k in keys]
            rows.append([category, "Δ", *cells(deltas, signed=True)])
            found = (intervals or {}).get(category) or {}
            if found.get("delta"):
                label = f"{100 * found['level']:g}% CI"
                rows.append([category, label, *(interval_text(found["delta"].get(k)) for k in keys)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _change(base: float | None, refined: float | None, with_delta: bool) -> str:
    """``base → refined``, or the base value alone without a refined map of its own."""
    if base is None:
        return "-"
    if not with_delta:
        return f"{100 * base:.2f}"
    return f"{100 * base:.2f} → " + ("-" if refined is None else f"{100 * refined:.2f}")


def _delta_cell(delta: float | None, record: dict[str, Any] | None) -> str:
    if delta is None:
        return "-"
    return f"{100 * delta:+.2f} {interval_text(record)}".rstrip()


def breakdown_table(
    breakdown: dict[str, dict[str, Any]],
    intervals: dict[str, dict[str, Any]] | None,
    part: str,
    changes: tuple[str, ...] = BREAKDOWN_KEYS,
    with_delta: bool = True,
) -> list[list[str]]:
    """The ``part`` (``"kinds"`` or ``"sizes"``) of every category as text cells, the header first
    (no row: an empty list). A kind's row: category, kind, its images (good ones included); a size
    bin's (those with regions only): category, its label, its regions. Then per ``BREAKDOWN_KEYS``
    metric, in percent: ``base → refined`` (for the ``changes`` keys; the base alone without
    ``with_delta``) and with ``with_delta`` the Δ in points with its interval (``interval_text``)."""
    rows = []
    for category, found in breakdown.items():
        if category == "mean":
            continue
        for name, entry in found.get(part, {}).items():
            if part == "sizes" and not entry["regions"]:
                continue
            label, count = (name, entry["images"]) if part == "kinds" else (entry["label"], entry["regions"])
            records = (intervals or {}).get(category, {}).get(part, {}).get(name) or {}
            row = [category, label, str(count)]
            for key in BREAKDOWN_KEYS:
                base, refined = entry["base"].get(key), entry["refined"].get(key)
                if key in changes or not with_delta:
                    row.append(_change(base, refined, with_delta))
                if with_delta:
                    row.append(_delta_cell(_delta(entry["base"], entry["refined"], key), records.get(key)))
            rows.append(row)
    if not rows:
        return []
    header = ["category", "kind" if part == "kinds" else "size", "images" if part == "kinds" else "regions"]
    for key in BREAKDOWN_KEYS:
        if key in changes or not with_delta:
            header.append(key)
        if with_delta:
            header.append(f"{key} Δ")
    return [header, *rows]


def format_kinds(
    breakdown: dict[str, dict[str, Any]],
    intervals: dict[str, dict[str, Any]] | None = None,
    with_delta: bool = True,
) -> str:
    """Per category and defect kind (the good images plus that kind's): the images, pixel AP
    base → refined and the Δs of pixel AP, pixel AUROC and AUPRO with their intervals; empty when no
    category has kinds."""
    table = breakdown_table(breakdown, intervals, "kinds", ("pixel_ap",), with_delta)
    return "\n".join(_render(table, left=2)) if table else ""


def format_sizes(
    breakdown: dict[str, dict[str, Any]],
    intervals: dict[str, dict[str, Any]] | None = None,
    with_delta: bool = True,
) -> str:
    """Per category and size bin with regions: the regions, and pixel AP, pixel AUROC and AUPRO
    base → refined with Δ and its interval; empty when no category has a bin with regions."""
    table = breakdown_table(breakdown, intervals, "sizes", BREAKDOWN_KEYS, with_delta)
    return "\n".join(_render(table, left=2)) if table else ""


def interval_legend(intervals: dict[str, Any] | None) -> str:
    """One line on what the intervals are (empty without intervals)."""
    found = next(iter((intervals or {}).values()), None)
    if not found:
        return ""
    return (
        f"[lo,hi]: {100 * found['level']:g}% paired bootstrap interval of Δ over the test images "
        f"({found['replicates']} resamples, seed {found['seed']}; not a rerun of training); "
        f"{CONTAINS_ZERO_MARK}: it contains 0"
    )


def format_breakdowns(results: dict[str, Any], with_delta: bool = True) -> str:
    """What the console prints under the main table: the per-kind and per-size tables, each under a
    title line, and the intervals' legend (empty when there is none of them)."""
    breakdown, intervals = results.get("breakdown") or {}, results.get("intervals")
    change = "; base → refined" if with_delta else ""
    parts = []
    kinds = format_kinds(breakdown, intervals, with_delta)
    if kinds:
        parts.append(f"by defect kind (the good images plus that kind's{change}):\n{kinds}")
    sizes = format_sizes(breakdown, intervals, with_delta)
    if sizes:
        parts.append(
            f"by defect size (GT regions by area share, negatives all normal pixels{change}):\n{sizes}"
        )
    legend = interval_legend(intervals)
    if legend:
        parts.append(legend)
    return "\n".join(parts)


def assemble_results(
    cfg: DictConfig, resolved: dict[str, Any], digest: str, overrides: list[str],
    per_category: dict[str, dict[str, Any]], timings: dict[str, float], method: str, commit: str | None,
) -> dict[str, Any]:  # fmt: skip
    """results.json's record of a finished run (layout: ``anorefine.run_folder``): each category's
    entry, the means over them, provenance; ``timings``: the run's ``total_s`` and ``prepare_s``;
    ``commit``: the checkout's commit when the run started."""
    categories = list(per_category)
    metrics: dict[str, Any] = {name: entry["metrics"] for name, entry in per_category.items()}
    metrics["mean"] = {stage: mean_metrics({c: metrics[c][stage] for c in categories}) for stage in STAGES}
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
    return {
        "format": RESULTS_FORMAT,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "refiner": cfg.refiner.name,
        "method": method,  # the refiner, with the curriculum that trains it (``ard+pgt``)
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
        # False when the refiner returns the base map itself (refiner=none): no Δ to show
        "refines": any(entry.get("refines", True) for entry in per_category.values()),
        # per category, what the curriculum reports beside the metrics (PGT: the per-group pixel-AP curve)
        "curriculum": {name: entry.get("curriculum") or {} for name, entry in per_category.items()},
        # per category, eval.threshold's rule and the threshold chosen per stage (null: rule=none)
        "thresholds": {name: entry.get("threshold") for name, entry in per_category.items()},
        "config": resolved,
        "config_hash": digest,
        "overrides": list(overrides),
        "timings": {
            # this process's time, plus the categories an earlier, interrupted process finished
            "total_s": timings["total_s"],
            "prepare_s": timings["prepare_s"],  # the once-per-run stage (AnomalyCLIP's prompt training)
            "per_category": {name: entry["timings"] for name, entry in per_category.items()},
        },
        "versions": package_versions(),
        "git_commit": commit,
    }


def percent(value: float | None) -> str:
    """A fraction as percent with two decimals (``-`` when undefined)."""
    return "-" if value is None else f"{100 * value:.2f}"


def run_method(results: dict[str, Any]) -> str:
    """The run's method label, the refiner with the curriculum that trains it (``ard+pgt``):
    results.json's ``method``, or for files written before it, rebuilt from the configured names."""
    if "method" in results:
        return str(results["method"])
    curriculum = results.get("config", {}).get("curriculum", {}).get("name")
    return results["refiner"] if curriculum in (None, "none") else f"{results['refiner']}+{curriculum}"


def refines(results: dict[str, Any]) -> bool:
    """True when the run's refined map is a map of its own (False for ``refiner=none``, whose Δ is 0 by
    construction): results.json's ``refines`` (the refiner's ``returns_base_map``), or for files
    written before it, whether the refiner was another than ``none``, then the only identity."""
    if "refines" in results:
        return bool(results["refines"])
    return results.get("refiner") != "none"


def print_summary(results: dict[str, Any], run_dir: Path) -> None:
    """The finished run on the console: the metrics table (with Δ and intervals when the refiner has a
    map of its own), the breakdowns, a smoke-only warning, the wall time and where the results are."""
    with_delta = refines(results)
    print(f"metrics in %, Δ = refined − base in points ({results['refiner']} over {results['model']}):")
    print(format_table(results["metrics"], with_delta=with_delta, intervals=results["intervals"]))
    breakdowns = format_breakdowns(results, with_delta)
    if breakdowns:
        print(breakdowns)
    if results["smoke_only"]:
        print("smoke-only: random weights (model.weights=random, tiny CLIP); these numbers measure nothing")
    print(f"wall time {results['timings']['total_s']:.0f} s; results: {run_dir / 'results.json'}")
