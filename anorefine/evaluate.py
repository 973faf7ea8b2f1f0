"""Standalone evaluator: score anomaly maps written by any method with this project's metrics.

``python -m anorefine.evaluate --maps DIR --dataset mvtec --root ROOT`` reads one map per test image
at ``DIR/<category>/test/<defect>/<image stem>.<ext>`` (``.tiff``/``.tif``/``.npy``/``.png``; the
MVTec convention), each at the image's original size as the official MVTec evaluation expects, and
scores it against the original-size ground truth with :class:`anorefine.metrics.AnomalyMetrics`
(image score: the map's maximum). Writes ``results.json`` and ``results.md`` into ``--output``
(default: DIR) and prints the table. Bad input exits with one line naming the file (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from PIL import Image

from anorefine import data
from anorefine.data.records import ImageRecord, require_labeled
from anorefine.datasets import open_dataset
from anorefine.errors import AnorefineError, DataError
from anorefine.metrics import METRIC_KEYS, AnomalyMetrics
from anorefine.metrics.names import AUPRO_LIMIT
from anorefine.results import git_commit, mean_metrics, package_versions, percent
from anorefine.run_folder import RESULTS_FILE, write_json_atomic

MAP_SUFFIXES = (".tiff", ".tif", ".npy", ".png")


def map_path(maps_dir: Path, record: ImageRecord) -> Path:
    """The map file of one test image; ``DataError`` if it is missing or has an unknown extension."""
    folder = maps_dir / record.category / "test" / record.defect_type
    stem = record.image_path.stem
    for suffix in MAP_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    others = sorted(folder.glob(f"{stem}.*")) if folder.is_dir() else []
    if others:
        raise DataError(f"map {others[0]} has an unknown extension: write maps as {', '.join(MAP_SUFFIXES)}")
    raise DataError(
        f"missing map {folder / stem}.tiff (or {', '.join(MAP_SUFFIXES[1:])}) for {record.image_path}"
    )


def read_map(path: Path) -> np.ndarray:
    """A (H, W) map with its stored dtype (float maps are never rescaled); ``DataError`` if unreadable."""
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix in (".tiff", ".tif"):
            array = tifffile.imread(path)
        else:
            with Image.open(path) as img:
                array = np.asarray(img)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read map {path}: {err}") from err
    array = np.squeeze(array)
    if array.ndim != 2:
        raise DataError(f"map {path} has shape {array.shape}: expected one channel, (H, W)")
    return array


def evaluate_category(
    maps_dir: Path, dataset: str, root: Path, category: str, aupro_limit: float
) -> dict[str, float | None]:
    """Metrics of one category's maps against its original-size masks."""
    records = open_dataset(dataset, root).records(category, "test")
    if not records:
        raise DataError(f"no test images for category {category!r} under {root}")
    require_labeled(records)
    images = data.AnomalyImageDataset(records, image_size=1)  # only original_mask is used
    metric = AnomalyMetrics(aupro_limit=aupro_limit)
    for index, record in enumerate(records):
        path = map_path(maps_dir, record)
        anomaly_map, mask = read_map(path), images.original_mask(index)
        if anomaly_map.shape != tuple(mask.shape):
            raise DataError(
                f"map {path} is {anomaly_map.shape[1]}x{anomaly_map.shape[0]} but image {record.image_path} "
                f"is {mask.shape[1]}x{mask.shape[0]}: write maps at the original image size"
            )
        has_mask = record.label == 0 or record.mask_path is not None
        metric.update(
            torch.from_numpy(anomaly_map)[None],
            mask[None],
            labels=torch.tensor([record.label]),
            has_mask=has_mask,
        )
    return metric.compute()


def metrics_table(metrics: dict[str, dict[str, float | None]]) -> str:
    """Markdown table, one row per category (and the mean), values in percent."""
    lines = ["| category | " + " | ".join(METRIC_KEYS) + " |", "|---" * (len(METRIC_KEYS) + 1) + "|"]
    for category, values in metrics.items():
        cells = (percent(values[key]) for key in METRIC_KEYS)
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(
    maps_dir: Path,
    dataset: str,
    root: Path,
    categories: Sequence[str] | None = None,
    output: Path | None = None,
    aupro_limit: float = AUPRO_LIMIT,
) -> dict[str, Any]:
    """Score every category's maps, write results.json and results.md, return the results."""
    if not maps_dir.is_dir():
        raise DataError(f"maps folder {maps_dir} does not exist")
    names = list(categories) if categories else open_dataset(dataset, root).list_categories()
    if not names:
        raise DataError(f"no categories found under {root} for --dataset {dataset}")
    metrics: dict[str, dict[str, float | None]] = {
        name: evaluate_category(maps_dir, dataset, root, name, aupro_limit) for name in names
    }
    metrics["mean"] = mean_metrics({name: metrics[name] for name in names})
    results = {
        "dataset": dataset,
        "root": str(root),
        "maps": str(maps_dir),
        "categories": names,
        "metrics": metrics,
        "eval_resolution": {"mode": "original", "size": None},
        "aupro_limit": aupro_limit,
        "versions": package_versions(),
        "git_commit": git_commit(),
    }
    output = output or maps_dir
    write_json_atomic(output / RESULTS_FILE, results)
    (output / "results.md").write_text(metrics_table(metrics) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m anorefine.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=Path, required=True, help="DIR/<category>/test/<defect>/<id>.<ext>")
    parser.add_argument("--dataset", default="mvtec", help="mvtec, visa, folder or demo (the dataset layout)")
    parser.add_argument("--root", type=Path, required=True, help="the dataset root (images and ground truth)")
    parser.add_argument("--categories", nargs="*", help="default: every category of the dataset")
    parser.add_argument("--output", type=Path, help="where results.json/results.md go (default: --maps)")
    parser.add_argument("--aupro-limit", type=float, default=AUPRO_LIMIT)
    args = parser.parse_args(argv)
    try:
        results = evaluate(args.maps, args.dataset, args.root, args.categories, args.output, args.aupro_limit)
    except AnorefineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(metrics_table(results["metrics"]))
    print(f"results: {(args.output or args.maps) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
