"""Figures of one category's test pass: best/worst image grids and pixel PR curves, base vs refined.

``figures/<category>_samples.png``: rows are the best then the worst anomalous images (by the
refined map's per-image pixel AP, see ``anorefine.samples``), columns image | GT | base map |
refined map; each map column shares one colour scale over the rows. ``figures/<category>_pr.png``:
the category's pixel precision-recall curves over all test pixels, at ``PR_POINTS`` score quantiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from matplotlib.figure import Figure

from anorefine.run_folder import FIGURES_DIR
from anorefine.samples import Sample

if TYPE_CHECKING:
    from anorefine.task import AnomalyTask

#: The run folder's subfolder of figures.
#: Thresholds of a PR curve (score quantiles).
PR_POINTS = 256
_QUANTILE_SAMPLE = 4096


def samples_path(run_dir: Path, category: str) -> Path:
    return run_dir / FIGURES_DIR / f"{category}_samples.png"


def pr_path(run_dir: Path, category: str) -> Path:
    return run_dir / FIGURES_DIR / f"{category}_pr.png"


def sample_grid(best: list[Sample], worst: list[Sample], title: str) -> Figure:
    """Rows of image | GT | base | refined for the best then the worst samples."""
    rows = [("best", s) for s in best] + [("worst", s) for s in worst]
    figure = Figure(figsize=(8, 2.1 * len(rows) + 0.4), dpi=72)
    figure.suptitle(title)
    axes = figure.subplots(len(rows), 4, squeeze=False)
    scales = {
        stage: (
            min(float(getattr(s, stage).min()) for _, s in rows),
            max(float(getattr(s, stage).max()) for _, s in rows),
        )
        for stage in ("base", "refined")
    }
    for (side, sample), row in zip(rows, axes, strict=True):
        row[0].imshow(sample.image)
        row[0].set_ylabel(f"{side} #{sample.index}")
        row[1].imshow(sample.mask, cmap="gray", vmin=0, vmax=1)
        for axis, stage in zip(row[2:], ("base", "refined"), strict=True):
            low, high = scales[stage]
            axis.imshow(getattr(sample, stage), cmap="inferno", vmin=low, vmax=high)
            axis.set_title(f"{stage} AP {getattr(sample, f'{stage}_ap'):.3f}", fontsize=9)
        row[0].set_title("image", fontsize=9)
        row[1].set_title("ground truth", fontsize=9)
        for axis in row:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout()
    return figure


def _quantiles(samples: list[torch.Tensor], count: int) -> torch.Tensor:
    """``count`` evenly spaced quantiles of the concatenated samples (none if they are empty)."""
    values = torch.cat(samples).double()
    if values.numel() == 0:
        return values
    return torch.quantile(values, torch.linspace(0, 1, count, dtype=torch.float64))


def pixel_pr_curve(
    maps: list[torch.Tensor], masks: list[torch.Tensor], points: int = PR_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) over all pixels, counted exactly at about ``points`` thresholds.

    Half the thresholds are quantiles of the anomalous pixels' scores (even steps in recall), half
    quantiles of all scores; both drawn from a bounded random sample of every chunk.
    """
    generator = torch.Generator().manual_seed(0)
    flat = [
        (m.detach().flatten().float().cpu(), k.flatten().bool().cpu())
        for m, k in zip(maps, masks, strict=True)
    ]

    def sample(values: torch.Tensor) -> torch.Tensor:
        if values.numel() == 0:
            return values
        draw = torch.randint(values.numel(), (min(values.numel(), _QUANTILE_SAMPLE),), generator=generator)
        return values[draw]

    thresholds = torch.unique(
        torch.cat(
            [
                _quantiles([sample(scores[labels]) for scores, labels in flat], points // 2),
                _quantiles([sample(scores) for scores, _ in flat], points - points // 2),
            ]
        )
    ).float()
    positives = torch.zeros(len(thresholds) + 1, dtype=torch.float64)
    negatives = torch.zeros_like(positives)
    for scores, labels in flat:
        bins = torch.bucketize(scores, thresholds, right=True)  # scores >= thresholds[:bins]
        positives += torch.bincount(bins[labels], minlength=len(positives)).double()
        negatives += torch.bincount(bins[~labels], minlength=len(negatives)).double()
    tp = positives.flip(0).cumsum(0).flip(0)[1:]  # pixels scoring >= each threshold
    fp = negatives.flip(0).cumsum(0).flip(0)[1:]
    predicted = tp + fp
    keep = predicted > 0
    recall = tp[keep] / max(float(positives.sum()), 1.0)
    return recall.numpy(), (tp[keep] / predicted[keep]).numpy()


def pr_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    """Precision-recall curves, one line per stage."""
    figure = Figure(figsize=(4.5, 4), dpi=72)
    axis = figure.subplots()
    for label, (recall, precision) in curves.items():
        axis.plot(recall, precision, label=label)
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axis.legend()
    figure.tight_layout()
    return figure


def stage_curves(task: AnomalyTask) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pixel PR curves of the maps the task's metrics accumulated (images with masks only)."""
    curves = {}
    stages = {"base = refined": "base"} if task.returns_base_map else {"base": "base", "refined": "refined"}
    for label, stage in stages.items():
        metric = task.metric(stage)
        maps, masks = [], []
        for batch_maps, batch_masks, flags in zip(
            metric.anomaly_maps, metric.gt_masks, metric.has_mask, strict=True
        ):
            maps.append(batch_maps[flags])
            masks.append(batch_masks[flags])
        if any(bool(m.any()) for m in masks):
            curves[label] = pixel_pr_curve(maps, masks)
    return curves


def write_category_figures(
    task: AnomalyTask, run_dir: Path, category: str, logger: Logger | bool
) -> list[Path]:
    """Save the category's figures (before the task's metrics are reset); log them to W&B if used
    (keys ``<category>/samples`` and ``<category>/pr``)."""
    (run_dir / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    written = []
    if task.samples.best:
        grid = sample_grid(task.samples.best, task.samples.worst, f"{category}: best and worst refined maps")
        grid.savefig(samples_path(run_dir, category))
        written.append(samples_path(run_dir, category))
    curves = stage_curves(task)
    if curves:
        pr_figure(curves, f"{category}: pixel PR").savefig(pr_path(run_dir, category))
        written.append(pr_path(run_dir, category))
    if isinstance(logger, WandbLogger):  # one key per figure: W&B shows a key's images at one size
        for path in written:
            logger.log_image(key=f"{category}/{path.stem.removeprefix(f'{category}_')}", images=[str(path)])
    return written
