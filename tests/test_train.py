"""End to end through train.py: results.json contents, determinism, resume, and one-line errors."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_RUN, run_train
from PIL import Image

from anorefine import console
from anorefine.map_files import read_map
from anorefine.results import format_table, git_commit
from anorefine.run_folder import RESULTS_FORMAT

METRIC_KEYS = {"image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro", "pro_compat"}


def demo_args(demo_root: Path, *extra: str) -> list[str]:
    return [f"dataset.root={demo_root}", "dataset.categories=[brick,gravel]", *TINY_RUN, *extra]


@pytest.fixture(scope="module")
def first_run(demo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    run = run_train(demo_args(demo_root, "eval.save_maps=true"), tmp_path_factory.mktemp("run") / "a")
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.slow
def test_results_json_is_complete(first_run) -> None:
    results = first_run.results
    assert (results["dataset"], results["model"], results["refiner"]) == ("demo", "patchcore", "none")
    assert results["method"] == "none" and results["refines"] is False  # refiner=none returns the base map
    assert results["format"] == RESULTS_FORMAT
    assert set(results["metrics"]) == {"brick", "gravel", "mean"}
    for entry in results["metrics"].values():
        assert set(entry["base"]) >= METRIC_KEYS
        assert entry["refined"] == entry["base"]  # refiner=none is the baseline
    for category in ("brick", "gravel"):
        for key in METRIC_KEYS:
            assert 0.0 <= results["metrics"][category]["base"][key] <= 1.0
    mean = results["metrics"]["mean"]["base"]["pixel_ap"]
    per_category = [results["metrics"][c]["base"]["pixel_ap"] for c in ("brick", "gravel")]
    assert mean == pytest.approx(sum(per_category) / 2)
    assert results["eval_resolution"] == {"mode": "input", "size": [128, 128]}
    assert results["config"]["model"]["image_size"] == 128
    assert "model.image_size=128" in results["overrides"]
    assert {"torch", "anomalib", "lightning"} <= set(results["versions"])
    assert results["git_commit"] == git_commit()  # the checkout's commit (HEAD when the run started)
    assert set(results["timings"]["per_category"]) == {"brick", "gravel"}
    assert "pixel_ap" in first_run.stdout and "mean" in first_run.stdout  # the printed table


@pytest.mark.slow
def test_save_maps_writes_every_test_images_maps_at_its_own_size(first_run, demo_root: Path) -> None:
    for category in ("brick", "gravel"):
        images = sorted((demo_root / category / "test").rglob("*.png"))
        for image in images:
            name = Path(image.parent.name) / f"{image.stem}.tiff"
            base = read_map(first_run.run_dir / "maps" / category / "base" / name)
            refined = read_map(first_run.run_dir / "maps" / category / "refined" / name)
            with Image.open(image) as img:
                assert base.shape == (img.height, img.width)
            assert np.array_equal(base, refined)  # refiner=none
            assert base.std() > 0


@pytest.mark.slow
def test_the_console_carries_no_per_trainer_banner_or_known_warning(first_run) -> None:
    printed = first_run.stdout + first_run.stderr
    assert "GPU available" not in printed and "litlogger" not in printed and "LeafSpec" not in printed


@pytest.mark.slow
def test_patchcore_beats_chance_on_the_demo(first_run) -> None:
    mean = first_run.results["metrics"]["mean"]["base"]
    assert mean["image_auroc"] > 0.7
    assert mean["pixel_auroc"] > 0.7


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(first_run, demo_root: Path, tmp_path: Path) -> None:
    again = run_train(demo_args(demo_root), tmp_path / "b")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.results["metrics"] == first_run.results["metrics"]


@pytest.mark.slow
def test_rerun_in_the_same_folder_reuses_finished_categories(
    first_run, demo_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "resume"
    run = run_train(demo_args(demo_root), run_dir)
    assert run.returncode == 0
    finished = run_dir / "categories" / "gravel.json"
    marker = json.loads(finished.read_text())
    marker["metrics"]["base"]["pixel_ap"] = 0.123456  # a recomputation would overwrite this
    finished.write_text(json.dumps(marker))
    (run_dir / "results.json").unlink()
    rerun = run_train(demo_args(demo_root), run_dir)
    assert rerun.returncode == 0
    assert rerun.results["metrics"]["gravel"]["base"]["pixel_ap"] == 0.123456
    assert rerun.results["metrics"]["brick"] == first_run.results["metrics"]["brick"]
    timings = rerun.results["timings"]  # the total counts both processes' categories
    assert timings["total_s"] >= sum(t["fit_s"] + t["test_s"] for t in timings["per_category"].values())


@pytest.mark.slow
def test_csv_logger_records_the_metrics(demo_root: Path, tmp_path: Path) -> None:
    args = [a for a in demo_args(demo_root) if a != "logger=none"] + ["dataset.categories=[grass]"]
    run = run_train(args, tmp_path / "csv")
    assert run.returncode == 0, run.stderr[-3000:]
    logged = (tmp_path / "csv" / "logs" / "metrics.csv").read_text()
    assert "grass/base/pixel_ap" in logged and "mean/refined/aupro" in logged
    value = run.results["metrics"]["grass"]["base"]["pixel_ap"]
    assert f"{value:.6f}"[:7] in logged


@pytest.mark.slow
def test_a_resumed_run_keeps_the_finished_categories_in_metrics_csv(demo_root: Path, tmp_path: Path) -> None:
    args = [a for a in demo_args(demo_root) if a != "logger=none"]
    run = run_train(args, tmp_path / "csv")
    assert run.returncode == 0, run.stderr[-3000:]
    (tmp_path / "csv" / "results.json").unlink()
    (tmp_path / "csv" / "categories" / "gravel.json").unlink()  # as if interrupted during gravel
    rerun = run_train(args, tmp_path / "csv")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    logged = (tmp_path / "csv" / "logs" / "metrics.csv").read_text()
    assert "brick/base/pixel_ap" in logged and "gravel/base/pixel_ap" in logged


@pytest.mark.slow
def test_wandb_logger_offline(demo_root: Path, tmp_path: Path) -> None:
    args = [a for a in demo_args(demo_root) if a != "logger=none"] + [
        "dataset.categories=[grass]",
        "logger=wandb",
    ]
    run = run_train(args, tmp_path / "wandb", env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset=mvtec", "dataset.root=/nonexistent/mvtec"], "/nonexistent/mvtec does not exist"),
        (["dataset.categories=[marble]"], "unknown category 'marble'"),
        (["model.backbone=wide_resnet50_2", "paths.weights_dir=/nonexistent/w"], "download.py weights"),
        (["dataset.catgories=[brick]"], "catgories"),
    ],
)
def test_bad_input_fails_with_one_clear_line(
    demo_root: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    run = run_train([f"dataset.root={demo_root}", *TINY_RUN, *args], tmp_path / "bad")
    assert run.returncode != 0
    assert message in run.stderr
    assert not (tmp_path / "bad" / "results.json").exists()


def copy_category(demo_root: Path, destination: Path, category: str = "brick") -> Path:
    """A one-category MVTec-layout folder copied from the demo, for a test to damage."""
    shutil.copytree(demo_root / category, destination / category)
    return destination


@pytest.mark.slow
def test_defective_image_without_mask_fails_naming_it(demo_root: Path, tmp_path: Path) -> None:
    root = copy_category(demo_root, tmp_path / "folder")
    missing = root / "brick" / "ground_truth" / "hole" / "003_mask.png"
    missing.unlink()
    run = run_train(["dataset=folder", f"dataset.root={root}", *TINY_RUN], tmp_path / "bad")
    assert run.returncode != 0
    assert "003_mask.png" in run.stderr and "hole" in run.stderr


@pytest.mark.slow
def test_unreadable_image_fails_naming_it(demo_root: Path, tmp_path: Path) -> None:
    root = copy_category(demo_root, tmp_path / "folder")
    broken = root / "brick" / "train" / "good" / "007.png"
    broken.write_bytes(broken.read_bytes()[:100])  # a truncated PNG
    run = run_train(["dataset=folder", f"dataset.root={root}", *TINY_RUN], tmp_path / "bad")
    assert run.returncode != 0
    assert "007.png" in run.stderr.splitlines()[-1]


@pytest.mark.slow
def test_folder_without_ground_truth_reports_null_pixel_metrics(demo_root: Path, tmp_path: Path) -> None:
    root = copy_category(demo_root, tmp_path / "folder")
    shutil.rmtree(root / "brick" / "ground_truth")
    run = run_train(["dataset=folder", f"dataset.root={root}", *TINY_RUN], tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    for stage in ("base", "refined"):
        metrics = run.results["metrics"]["brick"][stage]
        assert metrics["image_auroc"] > 0.5 and metrics["image_ap"] > 0.5
        assert all(metrics[key] is None for key in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"))
        assert run.results["metrics"]["mean"][stage]["pixel_ap"] is None


@pytest.mark.slow
def test_the_demo_job_prints_under_40_lines_then_its_breakdowns(demo_root: Path, tmp_path: Path) -> None:
    """make demo's command (ARD + PGT over the three demo categories, progress display on), made
    small: one line per stage and category and the table (with its 95% CI rows) in under 40 lines,
    then the per-kind and per-size tables (a line per category and kind or size bin); no
    per-Trainer banner, tip or known warning."""
    pgt = ["refiner=ard", "curriculum=pgt", "curriculum.group_size=26", "curriculum.steps_per_group=1",
           "curriculum.synthetic_per_group=2"]  # fmt: skip
    small = ["model.image_size=128", "model.coreset_ratio=0.05", "logger=none"]
    run = run_train([f"dataset.root={demo_root}", *small, *pgt], tmp_path / "demo")
    assert run.returncode == 0, run.stderr[-3000:]
    printed = (run.stdout + run.stderr).splitlines()
    breakdowns = next(i for i, line in enumerate(printed) if line.startswith("by defect kind"))
    assert breakdowns < 40, "\n".join(printed)
    assert len(printed) < 70, "\n".join(printed)  # 3 categories x (4 kinds + up to 3 size bins)
    assert not [line for line in printed if "GPU available" in line or "Tip:" in line or "Warning" in line]


def test_verbose_brings_lightning_banners_back() -> None:
    banner = logging.getLogger(console.LIGHTNING_INFO_LOGGERS[0])
    console.configure(verbose=False)
    assert banner.getEffectiveLevel() == logging.WARNING
    console.configure(verbose=True)
    assert banner.getEffectiveLevel() == logging.INFO


def test_the_final_table_shows_base_refined_and_their_difference_in_points() -> None:
    metrics = {
        "brick": {"base": {"pixel_ap": 0.1, "aupro": None}, "refined": {"pixel_ap": 0.25, "aupro": None}}
    }
    rows = [line.split() for line in format_table(metrics, keys=("pixel_ap", "aupro")).splitlines()]
    assert rows[2:] == [
        ["brick", "base", "10.00", "-"],
        ["brick", "refined", "25.00", "-"],
        ["brick", "Δ", "+15.00", "-"],
    ]
    assert len(format_table(metrics, keys=("pixel_ap",), with_delta=False).splitlines()) == 4
