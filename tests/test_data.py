"""Tests of the data layer: readers, torch dataset, demo generator, defect painter, download."""

from __future__ import annotations

import io
import json
import re
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import SIZE, code_from_value, make_mvtec, make_visa, mask_rows
from PIL import Image
from torch.utils.data import DataLoader

from anorefine.data import (
    DEMO_CATEGORIES,
    AnomalyImageDataset,
    ImageRecord,
    download,
    ensure_demo_dataset,
    has_ground_truth,
)
from anorefine.data import defects as defects_module
from anorefine.data import demo as demo_module
from anorefine.data.defects import (
    ANNOTATED_KINDS,
    DEFECT_KINDS,
    DEFECT_TYPES,
    MAX_AREA,
    MIN_AREA,
    area_range,
    paint_defect,
)
from anorefine.datasets import open_dataset
from anorefine.errors import DataError

S = 32  # dataset image size in tests


@pytest.fixture
def mvtec(tmp_path: Path) -> Path:
    return make_mvtec(tmp_path / "mvtec")


def _mask_file_rows(path: Path) -> int:
    """Number of fully-set top rows of a fixture mask file."""
    return int((np.asarray(Image.open(path)) > 0).all(axis=1).sum())


def _image_code(path: Path) -> int:
    return code_from_value(np.asarray(Image.open(path), np.float32).mean() / 255)


# ---------------------------------------------------------------- MVTec layout


def test_list_categories_mvtec_official_order_folder_sorted(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, categories=("grid", "bottle"))
    assert open_dataset("mvtec", root).list_categories() == ["bottle", "grid"]
    assert open_dataset("folder", root).list_categories() == ["bottle", "grid", "notes"]


def test_mvtec_train_split(mvtec: Path) -> None:
    records = open_dataset("mvtec", mvtec).records("bottle", "train")
    assert [r.image_path.name for r in records] == ["000.png", "001.png", "002.png"]  # Thumbs.db skipped
    assert {(r.label, r.defect_type, r.mask_path, r.category) for r in records} == {
        (0, "good", None, "bottle")
    }


def test_mvtec_test_split_labels_and_mask_pairing(mvtec: Path) -> None:
    records = open_dataset("mvtec", mvtec).records("grid", "test")
    assert [r.defect_type for r in records] == ["broken"] * 2 + ["crack"] * 2 + ["good"] * 2
    assert [r.label for r in records] == [1, 1, 1, 1, 0, 0]
    for r in records[:4]:
        assert r.mask_path == mvtec / "grid/ground_truth" / r.defect_type / f"{r.image_path.stem}_mask.png"
        assert _mask_file_rows(r.mask_path) == mask_rows(_image_code(r.image_path))
    assert has_ground_truth(records)
    assert open_dataset("mvtec", mvtec).records("grid", "test") == records


def test_dataset_items_shapes_values_and_masks(mvtec: Path) -> None:
    records = open_dataset("mvtec", mvtec).records("grid", "test")
    dataset = AnomalyImageDataset(records, S)
    assert len(dataset) == len(records)
    for i, record in enumerate(records):
        item = dataset[i]
        image, mask = item["image"], item["mask"]
        assert image.shape == (3, S, S) and image.dtype == torch.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # greyscale → RGB
        assert mask.shape == (1, S, S) and mask.dtype == torch.float32
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert (item["label"], item["has_mask"], item["index"]) == (record.label, True, i)
        assert item["original_size"].tolist() == list(SIZE)
        code = code_from_value(image.mean().item())
        expected = mask_rows(code) / SIZE[0] if record.label else 0.0
        assert mask.mean().item() == pytest.approx(expected, abs=0.035)  # this image's own mask
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, S, S) and batch["mask"].shape == (4, 1, S, S)
    assert batch["original_size"].shape == (4, 2) and batch["has_mask"].dtype == torch.bool


def test_dataset_converts_rgba_and_16bit(tmp_path: Path) -> None:
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((*SIZE, 4), (255, 0, 0, 10), np.uint8)).save(rgba)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full(SIZE, 32768, np.uint16)).save(deep)
    dataset = AnomalyImageDataset([ImageRecord(p, None, 0, "good", "x") for p in (rgba, deep)], S)
    assert dataset[0]["image"][:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert dataset[1]["image"].shape == (3, S, S)
    assert dataset[1]["image"].mean().item() == pytest.approx(0.5, abs=0.01)


# ---------------------------------------------------------------- folder datasets and masks


def test_folder_without_ground_truth_is_image_level(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path, categories=("bottle",), ground_truth=False)
    records = open_dataset("folder", root).records("bottle", "test")
    assert [r.mask_path for r in records if r.label] == [None] * 4
    assert not has_ground_truth(records)
    item = AnomalyImageDataset(records, S)[0]
    assert item["label"] == 1 and item["has_mask"] is False and item["mask"].sum() == 0
    with pytest.raises(DataError, match="has no mask"):
        open_dataset("mvtec", root).records("bottle", "test")  # MVTec AD must ship every mask


@pytest.mark.parametrize("kind", ["mvtec", "folder"])
def test_missing_mask_names_image_and_expected_path(mvtec: Path, kind: str) -> None:
    missing = mvtec / "bottle" / "ground_truth" / "crack" / "001_mask.png"
    missing.unlink()
    image = mvtec / "bottle" / "test" / "crack" / "001.png"
    with pytest.raises(DataError, match=re.escape(f"{image} has no mask: expected {missing}")):
        open_dataset(kind, mvtec).records("bottle", "test")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", ["mvtec", "visa"])
def test_missing_root(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "absent"
    with pytest.raises(DataError, match=re.escape(f"`python scripts/download.py {kind} --root {root}`")):
        open_dataset(kind, root).records("candle", "train")
    with pytest.raises(DataError, match=f"dataset root {re.escape(str(root))} does not exist"):
        open_dataset(kind, root).list_categories()


def test_unknown_category_kind_and_split(mvtec: Path) -> None:
    with pytest.raises(DataError, match=r"'screw'.*available: bottle, grid\).*dataset\.categories"):
        open_dataset("mvtec", mvtec).records("screw", "train")
    with pytest.raises(DataError, match=r"unknown dataset 'mvtecc': use one of .*mvtec.*visa"):
        open_dataset("mvtecc", mvtec).list_categories()
    with pytest.raises(DataError, match="split 'val'"):
        open_dataset("mvtec", mvtec).records("bottle", "val")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_image_raises_data_error(mvtec: Path, damage: str) -> None:
    path = mvtec / "bottle" / "train" / "good" / "000.png"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*SIZE, 3), np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:8] + b"junk" * 8)
    dataset = AnomalyImageDataset(open_dataset("mvtec", mvtec).records("bottle", "train"), S)
    with pytest.raises(DataError, match=re.escape(str(path))):
        dataset[0]


# ---------------------------------------------------------------- VisA


def test_visa_reads_split_csv(tmp_path: Path) -> None:
    root = make_visa(tmp_path)
    assert open_dataset("visa", root).list_categories() == ["candle", "pcb1"]
    for category in ("candle", "pcb1"):  # candle masks are 0/255, pcb1 masks 0/1
        train = open_dataset("visa", root).records(category, "train")
        assert len(train) == 3
        assert {(r.label, r.defect_type, r.mask_path) for r in train} == {(0, "good", None)}
        test = open_dataset("visa", root).records(category, "test")
        assert [(r.label, r.defect_type) for r in test] == [(1, "bad")] * 2 + [(0, "good")] * 2
        assert has_ground_truth(test) and all(r.category == category for r in test)
        for item in AnomalyImageDataset(test, S):
            code = code_from_value(item["image"].mean().item())
            expected = mask_rows(code) / SIZE[0] if item["label"] else 0.0
            assert item["mask"].mean().item() == pytest.approx(expected, abs=0.035)


def test_visa_missing_csv_and_mask(tmp_path: Path) -> None:
    root = make_visa(tmp_path)
    mask = root / "pcb1" / "Data" / "Masks" / "Anomaly" / "005.png"
    mask.unlink()
    with pytest.raises(DataError, match=re.escape(f"has no mask: expected {mask}")):
        open_dataset("visa", root).records("pcb1", "test")
    (root / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(DataError, match=r"split_csv/1cls\.csv does not exist.*download\.py visa"):
        open_dataset("visa", root).records("candle", "train")


# ---------------------------------------------------------------- demo dataset and painter
# `demo_root` (seed 0, full size) is the session fixture of conftest.py.


@pytest.fixture
def small_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the demo (the first files of each stream are the same as in the full one)."""
    monkeypatch.setattr(demo_module, "N_TRAIN", 2)
    monkeypatch.setattr(demo_module, "N_TEST_GOOD", 1)
    monkeypatch.setattr(demo_module, "N_PER_DEFECT", 1)


def test_demo_layout_counts_and_mask_areas(demo_root: Path) -> None:
    assert open_dataset("demo", demo_root).list_categories() == list(DEMO_CATEGORIES)
    for category in DEMO_CATEGORIES:
        assert len(open_dataset("demo", demo_root).records(category, "train")) == 60
        test = open_dataset("demo", demo_root).records(category, "test")
        assert sum(r.label == 0 for r in test) == 20 and has_ground_truth(test)
        assert sorted({r.defect_type for r in test}) == sorted(("good", *DEFECT_TYPES))
        for record in (r for r in test if r.label):
            mask = np.asarray(Image.open(record.mask_path))
            assert set(np.unique(mask)) <= {0, 255}
            assert MIN_AREA <= (mask > 0).mean() <= MAX_AREA
    with Image.open(demo_root / "grass" / "test" / "hole" / "000.png") as img:
        assert (img.size, img.mode) == ((256, 256), "RGB")


@pytest.mark.usefixtures("small_demo")
def test_demo_deterministic_by_seed(demo_root: Path, tmp_path: Path) -> None:
    same = ensure_demo_dataset(tmp_path / "same", seed=0)
    files = sorted(p.relative_to(same) for p in same.rglob("*.png"))
    assert len(files) == 3 * (2 + 1 + 2 * len(DEFECT_TYPES))
    assert all((same / f).read_bytes() == (demo_root / f).read_bytes() for f in files)
    other = ensure_demo_dataset(tmp_path / "other", seed=1)
    assert all((other / f).read_bytes() != (same / f).read_bytes() for f in files)


@pytest.mark.parametrize("kind", list(DEFECT_KINDS))
def test_painter_mask_is_exactly_the_changed_pixels(kind: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        image = rng.integers(20, 236, (96, 128, 3), dtype=np.uint8)
        donor = rng.integers(20, 236, (96, 128, 3), dtype=np.uint8)
        painted, mask = paint_defect(image, kind, rng, donor)
        changed = (painted != image).any(axis=2)
        assert not changed[~mask].any()
        if kind not in ANNOTATED_KINDS:  # their masks also cover barely changed pixels: test_defects.py
            assert changed[mask].mean() > 0.98
        low, high = area_range(kind)
        assert low <= mask.mean() <= high


@pytest.mark.usefixtures("small_demo")
def test_demo_marker_reuse_and_atomic_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = ensure_demo_dataset(tmp_path / "demo", seed=0)
    assert json.loads((root / demo_module.MARKER).read_text())["seed"] == 0

    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(defects_module, "paint_defect", interrupt)  # dies after the normal images
        assert ensure_demo_dataset(root, seed=0) == root  # complete: nothing is generated
        with pytest.raises(KeyboardInterrupt):
            ensure_demo_dataset(root, seed=1)
        assert json.loads((root / demo_module.MARKER).read_text())["seed"] == 0  # old demo intact
        with pytest.raises(KeyboardInterrupt):
            ensure_demo_dataset(tmp_path / "fresh", seed=0)
        assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no half dataset, no temp folder
    ensure_demo_dataset(root, seed=1)
    assert json.loads((root / demo_module.MARKER).read_text())["seed"] == 1


def test_demo_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("")
    with pytest.raises(DataError, match="not a dataset generated by anorefine"):
        ensure_demo_dataset(tmp_path / "mine")


# ---------------------------------------------------------------- download (network mocked by a local file)


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _serve(monkeypatch: pytest.MonkeyPatch, kind: str, archive: Path, sha256: str) -> None:
    """Point the archive of `kind` at a fake URL and serve `archive` for it."""
    marker = download.ARCHIVES[kind].marker
    fake = download.Archive(kind, f"https://example.invalid/{archive.name}", sha256, marker)
    monkeypatch.setitem(download.ARCHIVES, kind, fake)
    monkeypatch.setattr(download, "urlopen", lambda request, timeout: archive.open("rb"))


def test_download_verifies_extracts_and_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _tar(
        tmp_path / "VisA.tar",
        {"split_csv/1cls.csv": b"object,split,label,image,mask\n", "candle/Data/Normal/0000.JPG": b"x"},
    )
    _serve(monkeypatch, "visa", archive, download.sha256_of(archive))
    progress: list[int] = []
    root = download.download_dataset("visa", tmp_path / "visa", lambda done, total: progress.append(done))
    assert (root / "split_csv" / "1cls.csv").is_file() and progress[-1] == archive.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VisA.tar", "visa"]
    monkeypatch.setattr(download, "urlopen", None)  # present already: no download
    assert download.download_dataset("visa", root) == root


def test_download_unwraps_a_top_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _tar(tmp_path / "mvtec.tar", {"mvtec_anomaly_detection/bottle/train/good/000.png": b"x"})
    _serve(monkeypatch, "mvtec", archive, download.sha256_of(archive))
    root = download.download_dataset("mvtec", tmp_path / "mvtec")
    assert (root / "bottle" / "train" / "good" / "000.png").read_bytes() == b"x"


def test_download_rejects_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _tar(tmp_path / "VisA.tar", {"split_csv/1cls.csv": b""})
    _serve(monkeypatch, "visa", archive, "0" * 64)
    actual = download.sha256_of(archive)
    with pytest.raises(DataError, match=f"sha256 mismatch.*expected 0{{64}}, got {actual}"):
        download.download_dataset("visa", tmp_path / "visa")
    assert [p.name for p in tmp_path.iterdir()] == ["VisA.tar"]


def test_download_rejects_archive_without_split_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _tar(tmp_path / "other.tar", {"candle/readme.txt": b""})
    _serve(monkeypatch, "visa", archive, download.sha256_of(archive))
    with pytest.raises(DataError, match=r"holds no split_csv/1cls\.csv"):
        download.download_dataset("visa", tmp_path / "visa")
    assert not (tmp_path / "visa").exists()


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
    return path


def test_download_btad_zip_unwraps_its_top_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _zip(
        tmp_path / "btad.zip",
        {
            "BTech_Dataset_transformed/01/train/ok/0000.bmp": b"x",
            "BTech_Dataset_transformed/01/ground_truth/ko/0000.png": b"m",
            "readme.txt": b"beside the dataset",
        },
    )
    _serve(monkeypatch, "btad", archive, download.sha256_of(archive))
    root = download.download_dataset("btad", tmp_path / "btad")
    assert (root / "01" / "train" / "ok" / "0000.bmp").read_bytes() == b"x"
    assert (root / "01" / "ground_truth" / "ko" / "0000.png").read_bytes() == b"m"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["btad", "btad.zip"]


def _escaping_archive(path: Path, kind: str, name: str) -> Path:
    """A tar or zip archive of one member ``name`` that would land outside the target (``link``: a
    symbolic link pointing out of it)."""
    if kind == "tar":
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo(name)
            if name == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
            tar.addfile(info, io.BytesIO(b""))
        return path
    with zipfile.ZipFile(path, "w") as zipped:
        member = zipfile.ZipInfo(name)
        if name == "link":
            member.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(member, "../../etc/passwd" if name == "link" else "")
    return path


@pytest.mark.parametrize("kind", ["tar", "zip"])
@pytest.mark.parametrize("name", ["../evil.txt", "/absolute/evil.txt", "link"])
def test_extract_refuses_escaping_members_and_links(tmp_path: Path, kind: str, name: str) -> None:
    archive = _escaping_archive(tmp_path / f"bad.{kind}", kind, name)
    extract = download.extract_tar if kind == "tar" else download.extract_zip
    with pytest.raises(DataError, match="refused"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "link").exists()


def test_a_damaged_zip_fails_naming_it(tmp_path: Path) -> None:
    archive = tmp_path / "btad.zip"
    archive.write_bytes(b"PK not a zip")
    with pytest.raises(
        DataError, match=f"cannot extract {re.escape(str(archive))}: .*run the download again"
    ):
        download.extract_archive(archive, tmp_path / "out")
