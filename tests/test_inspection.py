"""Inspection mode: predict.py on a demo category (maps, masks, overlays, scores.csv, reloaded state)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RUN, run_train
from PIL import Image

from anorefine import map_files
from anorefine.data.records import ImageRecord
from anorefine.errors import AnorefineError
from anorefine.inspection import NormalScores, folder_records, split_holdout


def scores(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "scores.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_every_image_gets_a_map_mask_overlay_and_a_row(predicted, demo_root: Path) -> None:
    images = sorted((demo_root / "brick" / "test").rglob("*.png"))
    rows = scores(predicted.run_dir)
    assert [row["image"] for row in rows] == [
        str(p.relative_to(demo_root / "brick" / "test")) for p in images
    ]
    for row, image in zip(rows, images, strict=True):
        with Image.open(image) as img:
            size = (img.height, img.width)
        values = map_files.read_map(predicted.run_dir / row["map"])
        assert values.shape == size and values.dtype == np.float32
        mask = np.asarray(Image.open(predicted.run_dir / row["mask"]))
        assert mask.shape == size and set(np.unique(mask)) <= {0, 255}
        assert float(row["mask_share"]) == pytest.approx((mask > 0).mean())
        assert np.asarray(Image.open(predicted.run_dir / row["overlay"])).shape == (*size, 3)
        assert row["anomalous"] in ("0", "1")
    state = predicted.run_dir / "state"
    assert {p.name for p in state.iterdir()} == {"detector.pt", "refiner.pt", "inspection.json"}
    assert torch.load(state / "detector.pt", weights_only=True)  # the memory bank, weights-only
    assert "flagged" in predicted.stdout


@pytest.mark.slow
def test_the_threshold_from_normal_images_flags_defects_more_than_good_images(predicted) -> None:
    rows = scores(predicted.run_dir)
    good = [int(row["anomalous"]) for row in rows if row["image"].startswith("good/")]
    defective = [int(row["anomalous"]) for row in rows if not row["image"].startswith("good/")]
    share_good, share_defective = np.mean(good), np.mean(defective)
    print(
        f"flagged at the held-out-normal threshold: {share_defective:.0%} of defective, "
        f"{share_good:.0%} of good"
    )
    assert share_defective > share_good
    assert f"good: {sum(good)} of {len(good)}" in predicted.stdout


@pytest.mark.slow
def test_reloading_the_saved_state_gives_identical_maps(predicted, demo_root: Path, tmp_path: Path) -> None:
    args = [f"predict.state={predicted.run_dir}", f"predict.images={demo_root}/brick/test",
            "trainer.enable_progress_bar=false", "logger=none"]  # fmt: skip
    again = run_train(args, tmp_path / "again", entry="predict.py")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "fitting" not in again.stdout + again.stderr
    first, second = scores(predicted.run_dir), scores(again.run_dir)
    assert [r["score"] for r in first] == [r["score"] for r in second]
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(
            map_files.read_map(predicted.run_dir / a["map"]), map_files.read_map(again.run_dir / b["map"])
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "predict.images is not set"),
        (["predict.images=/no/such/folder"], "predict.images=/no/such/folder is not a folder"),
        (["predict.state=/no/such/run", "predict.images=DEMO"], "holds no state/inspection.json"),
        (["dataset.categories=[brick,grass]", "predict.images=DEMO"], "set dataset.categories=[NAME]"),
    ],
)
def test_bad_predict_input_fails_with_one_line(
    demo_root: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    args = [arg.replace("DEMO", str(demo_root / "brick" / "test")) for arg in args]
    run = run_train([f"dataset.root={demo_root}", *TINY_RUN, *args], tmp_path / "bad", entry="predict.py")
    assert run.returncode == 2 and message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_folder_records_are_every_image_below_the_folder_sorted(tmp_path: Path) -> None:
    for name in ("b/2.png", "a/1.jpg", "top.bmp", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    records = folder_records(tmp_path)
    assert [r.image_path.relative_to(tmp_path).as_posix() for r in records] == [
        "a/1.jpg",
        "b/2.png",
        "top.bmp",
    ]
    assert [r.defect_type for r in records] == ["a", "b", "."]
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnorefineError, match="holds no image files"):
        folder_records(tmp_path / "empty")


def test_the_holdout_is_evenly_spaced_and_never_empty() -> None:
    records = [ImageRecord(Path(f"{i}.png"), None, 0, "good", "c") for i in range(10)]
    fit, held = split_holdout(records, 0.2)
    assert [r.image_path.stem for r in held] == ["0", "9"] and len(fit) == 8
    assert len(split_holdout(records[:3], 0.01)[1]) == 1
    with pytest.raises(AnorefineError, match="at least 2 normal"):
        split_holdout(records[:1], 0.2)


def test_thresholds_are_the_quantiles_of_the_held_out_normal_maps() -> None:
    collector = NormalScores()
    maps = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    collector({}, maps, maps, torch.tensor([0.3, 0.7]))
    thresholds = collector.thresholds(image_quantile=1.0, pixel_quantile=0.9)
    assert thresholds.image == pytest.approx(0.7)
    assert thresholds.pixel == pytest.approx(np.quantile(np.arange(32), 0.9))
    assert thresholds.floor == pytest.approx(15.5) and thresholds.normal_images == 2


def test_map_files_keep_the_exact_values_at_the_images_size(tmp_path: Path) -> None:
    small = torch.rand(1, 8, 8)
    values = map_files.at_size(small, (20, 30))
    expected = F.interpolate(small[None], size=(20, 30), mode="bilinear", align_corners=False)[0, 0].numpy()
    assert np.array_equal(values, expected)
    map_files.write_map(tmp_path / "m.tiff", values)
    assert np.array_equal(map_files.read_map(tmp_path / "m.tiff"), values)
    picture = map_files.overlay(np.zeros((20, 30, 3)), values, values > 0.5, floor=0.0, threshold=1.0)
    assert picture.dtype == np.uint8 and picture.shape == (20, 30, 3)
