"""The standalone evaluator and evaluation at the original image resolution."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from fixtures_data import SIZE, make_mvtec
from PIL import Image

from anorefine import data
from anorefine.datasets import open_dataset
from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.evaluate import evaluate, main
from anorefine.metrics import compute_metrics
from anorefine.refiners.baseline import BaselineRefiner
from anorefine.task import AnomalyTask

REPO = Path(__file__).resolve().parent.parent
CATEGORIES = ("bottle", "grid")


def write_maps(maps_dir: Path, root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random float32 maps for every test image (.tiff, .npy and integer .png in turn); per category
    the stacked maps and original-size masks, in record order."""
    rng = np.random.default_rng(seed)
    stacked = {}
    for category in CATEGORIES:
        records = open_dataset("mvtec", root).records(category, "test")
        images = data.AnomalyImageDataset(records, image_size=1)
        maps, masks = [], []
        for index, record in enumerate(records):
            mask = images.original_mask(index).numpy()
            folder = maps_dir / category / "test" / record.defect_type
            folder.mkdir(parents=True, exist_ok=True)
            stem = folder / record.image_path.stem
            if index % 3 == 2:
                anomaly_map = rng.integers(0, 200, size=SIZE).astype(np.uint8) + 50 * mask.astype(np.uint8)
                Image.fromarray(anomaly_map).save(f"{stem}.png")
            else:
                anomaly_map = (rng.normal(size=SIZE) + mask * rng.random(SIZE)).astype(np.float32)
                if index % 3 == 0:
                    tifffile.imwrite(f"{stem}.tiff", anomaly_map)
                else:
                    np.save(f"{stem}.npy", anomaly_map)
            maps.append(anomaly_map.astype(np.float64))
            masks.append(mask)
        stacked[category] = np.stack(maps), np.stack(masks)
    return stacked


@pytest.fixture
def fixture_maps(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    root = make_mvtec(tmp_path / "mvtec", categories=CATEGORIES)
    maps_dir = tmp_path / "maps"
    return root, maps_dir, write_maps(maps_dir, root)


def test_evaluator_equals_compute_metrics(fixture_maps: tuple[Path, Path, dict]) -> None:
    root, maps_dir, stacked = fixture_maps
    results = evaluate(maps_dir, "mvtec", root)
    for category in CATEGORIES:
        maps, masks = stacked[category]
        assert masks.any() and not masks.all(axis=(1, 2)).any()
        assert results["metrics"][category] == compute_metrics(maps, masks)
    written = json.loads((maps_dir / "results.json").read_text())
    assert written["metrics"]["bottle"] == results["metrics"]["bottle"]
    assert written["eval_resolution"] == {"mode": "original", "size": None}
    assert written["metrics"]["mean"]["aupro"] == pytest.approx(
        np.mean([results["metrics"][c]["aupro"] for c in CATEGORIES])
    )
    assert "| bottle |" in (maps_dir / "results.md").read_text()


@pytest.mark.slow
def test_evaluator_command_line(fixture_maps: tuple[Path, Path, dict], tmp_path: Path) -> None:
    root, maps_dir, _ = fixture_maps
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "anorefine.evaluate", "--maps", str(maps_dir), "--root", str(root)]
    command += ["--dataset", "mvtec", "--categories", "grid", "--output", str(out)]
    done = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| grid |" in done.stdout
    assert json.loads((out / "results.json").read_text())["categories"] == ["grid"]


def test_evaluator_bad_input_names_the_file(
    fixture_maps: tuple[Path, Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    root, maps_dir, _ = fixture_maps
    folder = maps_dir / "bottle" / "test" / "broken"
    victim = sorted(folder.iterdir())[0]
    args = ["--maps", str(maps_dir), "--root", str(root), "--dataset", "mvtec"]

    victim.rename(victim.with_suffix(".jpg"))
    assert main(args) == 2
    assert f"map {victim.with_suffix('.jpg')} has an unknown extension" in capsys.readouterr().err

    victim.with_suffix(".jpg").unlink()
    assert main(args) == 2
    assert f"missing map {victim.with_suffix('')}.tiff" in capsys.readouterr().err

    np.save(victim.with_suffix(".npy"), np.zeros((SIZE[0], SIZE[1] - 1), dtype=np.float32))
    assert main(args) == 2
    assert f"map {victim.with_suffix('.npy')} is {SIZE[1] - 1}x{SIZE[0]}" in capsys.readouterr().err


class RampDetector(Detector):
    """A coarse map that is the image's mean intensity plus a horizontal ramp (distinct per image)."""

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        coarse = F.avg_pool2d(images.mean(1, keepdim=True), 4)
        coarse = coarse + torch.linspace(0, 0.01, coarse.shape[-1])
        return DetectorOutput(coarse, coarse.flatten(1).amax(1), coarse, 4, 4)


def test_original_resolution_scores_upsampled_maps_against_original_masks(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "mvtec", categories=("bottle",))
    test_set = data.AnomalyImageDataset(open_dataset("mvtec", root).records("bottle", "test"), image_size=32)
    batch = torch.utils.data.default_collate([test_set[i] for i in range(len(test_set))])
    results = {}
    for mode in ("input", "original"):
        task = AnomalyTask(
            RampDetector(),
            BaselineRefiner(),
            original_masks=test_set.original_mask if mode == "original" else None,
        )
        with torch.no_grad():
            task.test_step(batch, 0)
        results[mode] = task.compute_results()["base"]
        base, _, scores = task.predict_maps(batch["image"])
    upsampled = F.interpolate(base, size=SIZE, mode="bilinear", align_corners=False)
    masks = torch.stack([test_set.original_mask(i) for i in range(len(test_set))])
    assert masks.shape[-2:] == SIZE != (32, 32)
    assert results["original"] == compute_metrics(upsampled, masks, scores, batch["label"])
    assert results["input"] == compute_metrics(base, batch["mask"], scores, batch["label"])
    assert results["original"]["pixel_ap"] != results["input"]["pixel_ap"]
