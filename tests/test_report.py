"""The visual report: bounded sample keeping, figures, report.html rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from sklearn.metrics import precision_recall_curve

from anorefine.leaderboard import COLUMNS
from anorefine.metrics import AnomalyMetrics
from anorefine.report import evaluation_resolution, write_report
from anorefine.samples import SampleKeeper
from anorefine.viz import pixel_pr_curve, pr_path, samples_path, write_category_figures

SIZE = 32
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=5000",
]
INSTALL_HINT = "chromium is not installed: run `apt-get update && apt-get install -y chromium` (Debian)"


def synthetic_batch(count: int, seed: int = 0) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Images whose refined map finds its square the better the higher its index; every 4th is normal."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(count, 1, SIZE, SIZE)
    labels = torch.tensor([int(i % 4 != 3) for i in range(count)])
    for i in range(count):
        if labels[i]:
            masks[i, :, 8:16, 8:16] = 1
    noise = torch.rand(count, 1, SIZE, SIZE, generator=generator)
    quality = torch.arange(count, dtype=torch.float32).view(-1, 1, 1, 1) / count
    refined = noise + 2 * quality * masks
    base = noise + 0.1 * masks
    batch = {
        "image": torch.rand(count, 3, SIZE, SIZE, generator=generator),
        "mask": masks,
        "label": labels,
        "has_mask": torch.ones(count, dtype=torch.bool),
        "index": torch.arange(count),
    }
    return batch, base, refined


def fake_task(count: int = 12) -> SimpleNamespace:
    """What the figures read from an AnomalyTask after a test pass: samples and metric accumulators."""
    batch, base, refined = synthetic_batch(count)
    task = SimpleNamespace(samples=SampleKeeper(), returns_base_map=False, metrics={})
    task.samples.update(batch, base, refined)
    for stage, maps in (("base", base), ("refined", refined)):
        task.metrics[stage] = AnomalyMetrics()
        task.metrics[stage].update(
            maps, batch["mask"], maps.flatten(1).amax(1), batch["label"], batch["has_mask"]
        )
    return task


def results(categories: list[str]) -> dict[str, Any]:
    stage = dict.fromkeys(COLUMNS, 0.5)
    per_category = {c: {"base": stage, "refined": {**stage, "pixel_ap": 0.6}} for c in [*categories, "mean"]}
    return {
        "dataset": "demo",
        "model": "patchcore",
        "refiner": "ard",
        "categories": categories,
        "metrics": per_category,
        "config": {"curriculum": {"name": "pgt"}},
        "config_hash": "0123456789abcdef",
        "overrides": ["refiner=ard", "curriculum=pgt"],
        "smoke_only": True,
    }


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder with figures for category ``a`` only, and its report."""
    write_category_figures(fake_task(), tmp_path, "a", False)
    write_report(tmp_path, results(["a", "b"]))
    return tmp_path


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def render(page: Path, profile: Path) -> str:
    """The DOM of a page after load, as headless Chromium leaves it."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail(INSTALL_HINT)
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def loaded_images(dom: str) -> tuple[int, int]:
    """(images decoded, images on the page) as the page's own load check counted them."""
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:500]
    counts = dict(re.findall(r'data-images-(loaded|total)="(\d+)"', body.group(0)))
    return int(counts["loaded"]), int(counts["total"])


def test_the_keeper_holds_the_best_and_worst_anomalous_images_only() -> None:
    keeper = SampleKeeper(per_side=2)
    for seed in range(3):  # several batches: the choice is made over the whole stream
        batch, base, refined = synthetic_batch(12, seed)
        batch["index"] = batch["index"] + 12 * seed
        keeper.update(batch, base, refined)
    assert len(keeper._best) == len(keeper._worst) == 2
    best_ap = [sample.refined_ap for sample in keeper.best]
    worst_ap = [sample.refined_ap for sample in keeper.worst]
    assert best_ap == sorted(best_ap, reverse=True) and worst_ap == sorted(worst_ap)
    assert min(best_ap) > max(worst_ap)
    assert all(sample.index % 4 != 3 for sample in keeper.best + keeper.worst)  # never a normal image
    sample = keeper.best[0]
    assert sample.image.shape == (SIZE, SIZE, 3) and sample.image.dtype == np.uint8
    assert sample.mask.shape == sample.base.shape == sample.refined.shape == (SIZE, SIZE)


def test_pr_points_lie_on_the_exact_curve() -> None:
    generator = torch.Generator().manual_seed(1)
    maps = [torch.rand(3, SIZE, SIZE, generator=generator) for _ in range(2)]
    masks = [torch.rand(3, SIZE, SIZE, generator=generator) < map_ * 0.3 for map_ in maps]
    masks[0][:] = False  # a chunk of normal images only
    recall, precision = pixel_pr_curve(maps, masks, points=50)
    labels = torch.cat([m.flatten() for m in masks]).numpy()
    exact_p, exact_r, _ = precision_recall_curve(labels, torch.cat([m.flatten() for m in maps]).numpy())
    assert recall[0] == 1.0 and len(recall) > 10
    for r, p in zip(recall, precision, strict=True):
        assert np.min(np.abs(exact_r - r) + np.abs(exact_p - p)) < 1e-6


def test_the_report_references_only_existing_figures(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    sources = image_sources(page)
    assert sources == ["figures/a_samples.png", "figures/a_pr.png"]
    assert all((run_dir / source).is_file() for source in sources)
    assert "No figures" in page  # category b has none
    assert "smoke-only" in page and "60.00 (+10.00)" in page


@pytest.mark.slow
def test_chromium_loads_every_image_of_the_report(
    run_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dom = render(run_dir / "report.html", tmp_path_factory.mktemp("chromium"))
    assert loaded_images(dom) == (2, 2)
    samples_path(run_dir, "a").unlink()  # the check notices an image that does not load
    dom = render(run_dir / "report.html", tmp_path_factory.mktemp("chromium"))
    assert loaded_images(dom) == (1, 2)
    assert "[not loaded: figures/a_samples.png]" in dom


def test_figures_are_logged_to_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real W&B run in offline mode: each figure lands in the run's media files."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="anorefine-test", save_dir=str(tmp_path), mode="offline")
    written = write_category_figures(fake_task(), tmp_path, "a", logger)
    logger.experiment.finish()
    assert written == [samples_path(tmp_path, "a"), pr_path(tmp_path, "a")]
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = run / "files" / "media" / "images" / "a"
    assert sorted(path.name.split("_")[0] for path in media.glob("*.png")) == ["pr", "samples"]


def test_the_report_names_how_maps_were_evaluated() -> None:
    assert evaluation_resolution({"eval_resolution": {"mode": "input", "size": [256, 256]}}) == (
        "the input size 256×256"
    )
    assert evaluation_resolution({"eval_resolution": {"mode": "original", "size": None}}) == (
        "each image's original size"
    )
