"""Run results: provenance (package versions, git commit), category means and the printed table."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from anorefine.run_folder import METRIC_KEYS, STAGES

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
        mean[key] = None if any(v is None for v in values) else sum(values) / len(values)
    return mean


def format_table(
    metrics: dict[str, dict[str, dict[str, float | None]]],
    keys: tuple[str, ...] = METRIC_KEYS,
    with_delta: bool = True,
) -> str:
    """Plain-text table in percent: per category the base and refined rows, and with ``with_delta``
    their difference (refined − base, in points)."""
    header = ["category", "stage", *keys]
    rows = [header]

    def cells(values: list[float | None], signed: bool) -> list[str]:
        return ["-" if v is None else f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}" for v in values]

    for category, stages in metrics.items():
        for stage in STAGES:
            rows.append([category, stage, *cells([stages[stage].get(k) for k in keys], signed=False)])
        if with_delta:
            base, refined = stages["base"], stages["refined"]
            deltas = [
                None if base.get(k) is None or refined.get(k) is None else refined[k] - base[k] for k in keys
            ]
            rows.append([category, "Δ", *cells(deltas, signed=True)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
