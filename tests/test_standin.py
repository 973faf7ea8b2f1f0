"""Stand-ins of MVTec AD and VisA: the fact table, the layout and counts they write, and the real
readers (the code behind dataset=mvtec / dataset=visa) reading them unchanged."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_RUN, run_train
from hydra import compose, initialize_config_dir
from PIL import Image

from anorefine.conf import CONF_DIR
from anorefine.config import register_configs
from anorefine.data import MVTEC_CATEGORIES, VISA_CATEGORIES
from anorefine.data.generated import MARKER
from anorefine.data.layouts import MVTEC_LAYOUTS, VISA_LAYOUTS
from anorefine.data.standin import scaled_count, scaled_size, write_standin
from anorefine.pipeline import Pipeline

REPO = Path(__file__).resolve().parent.parent
FRACTION, SIZE_SCALE = 0.1, 0.05  # images of 45-75 px
MVTEC = ("bottle", "grid")  # grid is greyscale
VISA = ("candle", "pcb3")  # pcb3's 905 train images scale to 90.5: rounded half up to 91
#: (normal, anomalous) images per VisA category as released (the VisA README: 9,621 normal, 1,200
#: anomalous in all).
VISA_TOTALS = {
    "candle": (1000, 100), "capsules": (602, 100), "cashew": (500, 100), "chewinggum": (503, 100),
    "fryum": (500, 100), "macaroni1": (1000, 100), "macaroni2": (1000, 100), "pcb1": (1004, 100),
    "pcb2": (1001, 100), "pcb3": (1006, 100), "pcb4": (1005, 100), "pipe_fryum": (500, 100),
}  # fmt: skip
register_configs()


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("standin") / "mvtec"
    return write_standin("mvtec", root, MVTEC, FRACTION, SIZE_SCALE, seed=0)


@pytest.fixture(scope="module", params=[255, 1], ids=["masks255", "masks1"])
def visa(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """(root, mask value): with the released masks (0/255) and with 0/1 masks."""
    root = tmp_path_factory.mktemp("standin") / "visa"
    value = request.param
    return write_standin("visa", root, VISA, FRACTION, SIZE_SCALE, seed=0, visa_mask_value=value), value


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_fact_table_adds_up() -> None:
    assert tuple(MVTEC_LAYOUTS) == MVTEC_CATEGORIES and tuple(VISA_LAYOUTS) == VISA_CATEGORIES
    assert sum(layout.train_good for layout in MVTEC_LAYOUTS.values()) == 3629
    assert sum(layout.test_good + layout.test_defective for layout in MVTEC_LAYOUTS.values()) == 1725
    assert sum(len(layout.defects) for layout in MVTEC_LAYOUTS.values()) == 73
    assert {c for c, layout in MVTEC_LAYOUTS.items() if layout.mode == "L"} == {"grid", "screw", "zipper"}
    for layout in MVTEC_LAYOUTS.values():
        assert [d for d, _ in layout.defects] == sorted(d for d, _ in layout.defects)
        assert layout.size[0] == layout.size[1]
    published = {c: (v.train_good + v.test_good, v.test_defective) for c, v in VISA_LAYOUTS.items()}
    assert published == VISA_TOTALS
    assert all(layout.mode == "RGB" for layout in VISA_LAYOUTS.values())


def test_counts_are_scaled_half_up_and_never_below_one() -> None:
    assert scaled_count(18, 0.25) == 5  # 4.5 rounds up (Python's round would give 4)
    assert scaled_count(90, 0.35) == 32  # 31.499999999999996 in floating point: still 31.5
    assert scaled_count(209, 0.1) == 21 and scaled_count(22, 0.05) == 1 and scaled_count(8, 0.01) == 1
    assert scaled_count(3629, 1.0) == 3629
    assert scaled_size(VISA_LAYOUTS["candle"], 0.05) == (64, 58)
    assert scaled_size(MVTEC_LAYOUTS["bottle"], 1.0) == (900, 900)


def test_mvtec_layout_counts_sizes_modes_and_masks(mvtec_root: Path) -> None:
    assert names(mvtec_root) == [MARKER, *MVTEC]
    for category, expected in (("bottle", [21, 2, 2, 2, 2]), ("grid", [26, 2, 1, 1, 1, 1, 1])):
        folders = [mvtec_root / category / "train" / "good", mvtec_root / category / "test" / "good"]
        folders += [mvtec_root / category / "test" / d for d, _ in MVTEC_LAYOUTS[category].defects]
        assert [len(list(folder.iterdir())) for folder in folders] == expected
    with Image.open(mvtec_root / "grid" / "train" / "good" / "000.png") as img:
        assert (img.size, img.mode) == ((51, 51), "L")
    for category in MVTEC:
        layout, cat = MVTEC_LAYOUTS[category], mvtec_root / category
        defects = [d for d, _ in layout.defects]
        assert names(cat) == ["ground_truth", "test", "train"] and names(cat / "train") == ["good"]
        assert names(cat / "test") == sorted(["good", *defects]) and names(cat / "ground_truth") == defects
        counts = {
            "train": scaled_count(layout.train_good, FRACTION),
            "good": scaled_count(layout.test_good, FRACTION),
        }
        for folder, count in [*counts.items(), *((d, scaled_count(n, FRACTION)) for d, n in layout.defects)]:
            images = cat / folder / "good" if folder == "train" else cat / "test" / folder
            assert names(images) == [f"{i:03d}.png" for i in range(count)], folder
            for image in images.iterdir():
                with Image.open(image) as img:
                    assert (img.size, img.mode, img.format) == (
                        scaled_size(layout, SIZE_SCALE),
                        layout.mode,
                        "PNG",
                    )
            if folder in defects:
                masks = cat / "ground_truth" / folder
                assert names(masks) == [f"{i:03d}_mask.png" for i in range(count)]
                for mask in masks.iterdir():
                    with Image.open(mask) as img:
                        assert (img.size, img.mode) == (scaled_size(layout, SIZE_SCALE), "L")
                        assert set(np.unique(np.asarray(img))) == {0, 255}


def visa_rows(root: Path) -> list[dict[str, str]]:
    with (root / "split_csv" / "1cls.csv").open(newline="") as f:
        assert f.readline() == "object,split,label,image,mask\n"
        f.seek(0)
        return list(csv.DictReader(f))


def test_visa_layout_counts_sizes_modes_and_masks(visa: tuple[Path, int]) -> None:
    visa_root, value = visa
    rows = visa_rows(visa_root)
    assert names(visa_root) == [MARKER, *VISA, "split_csv"]
    for category in VISA:
        layout = VISA_LAYOUTS[category]
        n_train, n_test = scaled_count(layout.train_good, FRACTION), scaled_count(layout.test_good, FRACTION)
        n_anomaly = scaled_count(layout.test_defective, FRACTION)
        mine = [r for r in rows if r["object"] == category]
        splits = [(r["split"], r["label"]) for r in mine]
        assert (
            splits
            == [("train", "normal")] * n_train
            + [("test", "normal")] * n_test
            + [("test", "anomaly")] * n_anomaly
        )
        data = f"{category}/Data"
        assert [r["image"] for r in mine] == [
            f"{data}/Images/Normal/{i:04d}.JPG" for i in range(n_train + n_test)
        ] + [f"{data}/Images/Anomaly/{i:03d}.JPG" for i in range(n_anomaly)]
        assert [r["mask"] for r in mine] == [""] * (n_train + n_test) + [
            f"{data}/Masks/Anomaly/{i:03d}.png" for i in range(n_anomaly)
        ]
        assert names(visa_root / category / "Data") == ["Images", "Masks"]
        for row in mine:
            with Image.open(visa_root / row["image"]) as img:
                assert (img.size, img.mode, img.format) == (scaled_size(layout, SIZE_SCALE), "RGB", "JPEG")
            if row["mask"]:
                with Image.open(visa_root / row["mask"]) as img:
                    assert (img.size, img.mode, img.format) == (scaled_size(layout, SIZE_SCALE), "L", "PNG")
                    assert set(np.unique(np.asarray(img))) == {0, value}
    assert (n_train, n_test, n_anomaly) == (91, 10, 10)  # pcb3: 90.5 rounded up


def compose_dataset(name: str, root: Path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[f"dataset={name}", f"dataset.root={root}"])


def test_the_mvtec_reader_reads_the_standin(mvtec_root: Path) -> None:
    check_read_by_the_run("mvtec", mvtec_root)


def test_the_visa_reader_reads_the_standin(visa: tuple[Path, int]) -> None:
    check_read_by_the_run("visa", visa[0])


def check_read_by_the_run(name: str, root: Path) -> None:
    """The run's own path (dataset=mvtec / dataset=visa): categories, splits, masks at each image's size."""
    layouts = MVTEC_LAYOUTS if name == "mvtec" else VISA_LAYOUTS
    cfg = compose_dataset(name, root)
    pipeline = Pipeline(cfg)
    assert pipeline.dataset.selected_categories() == list(MVTEC if name == "mvtec" else VISA)
    for category in pipeline.dataset.selected_categories():
        layout = layouts[category]
        train, test = (pipeline.images(category, split) for split in ("train", "test"))
        assert len(train) == scaled_count(layout.train_good, FRACTION)
        assert all(r.label == 0 for r in train.records)
        defective = [(d, scaled_count(n, FRACTION)) for d, n in layout.defects]
        assert len(test) == scaled_count(layout.test_good, FRACTION) + sum(n for _, n in defective)
        assert sum(r.label for r in test.records) == sum(n for _, n in defective)
        if name == "mvtec":
            assert sorted({r.defect_type for r in test.records if r.label}) == [d for d, _ in defective]
        test.check_files()
        for index, record in enumerate(test.records):
            item, mask = test[index], test.original_mask(index)
            assert item["image"].shape == (3, cfg.dataset.image_size, cfg.dataset.image_size)
            assert tuple(item["original_size"].tolist()) == scaled_size(layout, SIZE_SCALE)[::-1]
            assert bool(mask.any()) == bool(record.label) and item["has_mask"]
            if record.label:
                with Image.open(record.mask_path) as img:
                    assert int(mask.sum()) == int((np.asarray(img) > 0).sum())


def test_rerun_is_a_no_op_and_other_options_rewrite(tmp_path: Path) -> None:
    root = tmp_path / "mvtec"
    write_standin("mvtec", root, ["toothbrush"], 0.05, 0.05)
    image = root / "toothbrush" / "test" / "defective" / "000.png"
    stamp = image.stat().st_mtime_ns
    write_standin("mvtec", root, ["toothbrush"], 0.05, 0.05)
    assert image.stat().st_mtime_ns == stamp
    write_standin("mvtec", root, ["toothbrush"], 0.1, 0.05)
    assert len(list(image.parent.iterdir())) == 3  # 30 × 0.1
    assert [p.name for p in tmp_path.iterdir()] == ["mvtec"]  # no temporary folder left


def run_script(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "scripts" / "standin.py"), *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["mvtec", "--categories", "bottle,bottel"], "'bottel'"),
        (["visa", "--categories", "bottle"], "'bottle'"),
        (["mvtec", "--fraction", "1.5"], "fraction 1.5 is not in (0, 1]"),
        (["mvtec", "--fraction", "0"], "fraction 0.0 is not in (0, 1]"),
        (["mvtec", "--size-scale", "0.01"], "size scale 0.01"),
        (["mvtec", "--size-scale", "inf"], "size scale inf"),
        (["mvtec", "--seed", "-1"], "seed -1"),
        (["visa", "--visa-mask-values", "2"], "2"),
        (["kolektor"], "'kolektor'"),
    ],
)
def test_bad_input_exits_2_naming_the_value(args: list[str], named: str, tmp_path: Path) -> None:
    done = run_script(*args, "--root", str(tmp_path / "out"))
    assert done.returncode == 2 and named in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    done = run_script("mvtec", "--root", str(tmp_path), "--categories", "grid", "--size-scale", "0.05")
    assert done.returncode == 2 and "not empty" in done.stderr and "--root" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def check_train_runs(args: list[str], category: str, run_dir: Path) -> None:
    """train.py with ``args`` ends well and scores ``category`` at each image's own size."""
    run = run_train(
        [*args, f"dataset.categories=[{category}]", "eval.resolution=original", *TINY_RUN], run_dir
    )
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = run.results["metrics"][category]["base"]
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and 0.0 <= metrics["image_auroc"] <= 1.0, metrics


@pytest.mark.slow
def test_a_paper_command_runs_on_the_mvtec_standin(mvtec_root: Path, tmp_path: Path) -> None:
    """The rehearsal docs/datasets.md describes: train.py dataset=mvtec on the stand-in's root."""
    check_train_runs(["dataset=mvtec", f"dataset.root={mvtec_root}"], "grid", tmp_path / "run")


@pytest.mark.slow
def test_a_paper_command_runs_on_the_visa_standin(visa: tuple[Path, int], tmp_path: Path) -> None:
    """The same on VisA, with masks 0/255 and 0/1."""
    check_train_runs(["dataset=visa", f"dataset.root={visa[0]}"], "candle", tmp_path / "run")


def test_the_docs_tables_state_the_fact_table() -> None:
    """docs/datasets.md's two tables, row by row, equal anorefine/data/layouts.py."""
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in (REPO / "docs" / "datasets.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| category")
    ]
    mvtec = {
        c: [f"{v.size[0]}×{v.size[1]}", v.mode, str(v.train_good), str(v.test_good),
            ", ".join(f"{d} {n}" for d, n in v.defects)]
        for c, v in MVTEC_LAYOUTS.items()
    }  # fmt: skip
    visa = {
        c: [f"{v.size[0]}×{v.size[1]}", *map(str, (*VISA_TOTALS[c], v.train_good, v.test_good))]
        for c, v in VISA_LAYOUTS.items()
    }
    assert {row[0]: row[1:] for row in rows if row[0] in mvtec} == mvtec
    assert {row[0]: row[1:] for row in rows if row[0] in visa} == visa
