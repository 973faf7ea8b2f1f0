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
    task.metric = task.metrics.__getitem__  # AnomalyTask.metric(stage)
    task.samples.update(batch, base, refined)
    for stage, maps in (("base", base), ("refined", refined)):
        task.metrics[stage] = AnomalyMetrics()
        task.metrics[stage].update(
            maps, batch["mask"], maps.flatten(1).amax(1), batch["label"], batch["has_mask"]
        )
    return task


def interval_record(low: float, high: float) -> dict[str, Any]:
    return {"low": low, "high": high, "contains_zero": low <= 0 <= high, "valid": 1000}


def breakdown_entry(base: float, refined: float, **counts: Any) -> dict[str, Any]:
    keys = ("pixel_auroc", "pixel_ap", "aupro")
    return {**counts, "base": dict.fromkeys(keys, base), "refined": dict.fromkeys(keys, refined)}


def results(categories: list[str]) -> dict[str, Any]:
    """A format-3 results.json: category ``a`` has a per-kind and per-size breakdown and intervals
    (the size bin's AUPRO Δ contains 0); the others have neither."""
    stage = dict.fromkeys(COLUMNS, 0.5)
    per_category = {c: {"base": stage, "refined": {**stage, "pixel_ap": 0.6}} for c in [*categories, "mean"]}
    delta = {"pixel_ap": interval_record(0.04, 0.16)}
    return {
        "format": 3,
        "dataset": "demo",
        "model": "patchcore",
        "refiner": "ard",
        "categories": categories,
        "metrics": per_category,
        "breakdown": {
            "a": {
                "kinds": {"hole": breakdown_entry(0.3, 0.45, images=28, defective=8)},
                "sizes": {"large": breakdown_entry(0.7, 0.69, label=">1%", regions=5, pixels=900)},
            },
            "mean": {"kinds": {}, "sizes": {}},
        },
        "intervals": {
            category: {
                "level": 0.95,
                "replicates": 1000,
                "seed": 0,
                "delta": delta,
                "kinds": {"hole": {"pixel_ap": interval_record(0.08, 0.22)}},
                "sizes": {"large": {"aupro": interval_record(-0.03, 0.01)}},
            }
            for category in ("a", "mean")
        },
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
    assert "smoke-only" in page and "60.00 (+10.00) [+4.00,+16.0]" in page


def section_rows(page: str, part: str) -> list[list[str]]:
    """The cells of the rows (header first) of the page's per-kind or per-size table."""
    table = re.search(rf'<table class="{part}">(.*?)</table>', page, re.S)
    assert table is not None, part
    return [re.findall(r"<t[hd]>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", table.group(1))]


def test_the_report_breaks_the_metrics_down_by_kind_and_size(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    assert (
        page.index("<h2>By defect kind</h2>")
        < page.index("<h2>By defect size</h2>")
        < page.index("<h2>Figures")
    )
    kinds = section_rows(page, "kinds")
    assert kinds[0][:5] == ["category", "kind", "images", "P-AP", "P-AP Δ"]
    assert kinds[1][:5] == ["a", "hole", "28", "30.00 → 45.00", "+15.00 [+8.00,+22.0]"]
    sizes = section_rows(page, "sizes")
    assert sizes[1][:3] == ["a", "&gt;1%", "5"] and sizes[1][-1] == "-1.00 [-3.00,+1.00]~"
    assert "1000 resamples" in page and "seed 0" in page and "not</em> a rerun of training" in page
    assert "docs/experiments.md</a>" in page


def test_a_format_2_run_has_no_breakdown_sections_but_a_reason(tmp_path: Path) -> None:
    old = {k: v for k, v in results(["a"]).items() if k not in ("breakdown", "intervals", "format")}
    page = (write_report(tmp_path, old)).read_text()
    assert "<h2>By defect kind</h2>" in page and "Not computed" in page and "No bootstrap intervals" in page


@pytest.mark.slow
def test_chromium_loads_every_image_of_the_report(
    run_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dom = render(run_dir / "report.html", tmp_path_factory.mktemp("chromium"))
    assert loaded_images(dom) == (2, 2)
    for part in ("kinds", "sizes"):  # the breakdown tables as the browser built them, with their numbers
        _, *rows = section_rows(dom, part)
        assert rows and all(re.fullmatch(r"[-+]?\d+\.\d\d.*", cell) for cell in rows[0][3:]), rows
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
