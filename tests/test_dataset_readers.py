"""The readers of MVTec AD 2, MVTec LOCO AD, BTAD, MPDD and Real-IAD on small trees of their layouts
(tests/fixtures_data.py): counts, labels, masks (LOCO's union), extra and unlabeled splits, Real-IAD's
split files, views and samples, and the multi-view sample-level score against numpy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_with
from fixtures_data import (
    LOCO_SECOND_VALUE,
    REALIAD_SAMPLES,
    SIZE,
    code_from_value,
    loco_cols,
    make_btad,
    make_loco,
    make_mpdd,
    make_mvtec,
    make_mvtec_ad2,
    make_realiad,
    mask_rows,
)
from PIL import Image

from anorefine import plan
from anorefine.data import AnomalyImageDataset
from anorefine.data.records import UNLABELED, ImageRecord, require_labeled
from anorefine.datasets import DatasetSource, build_dataset, open_dataset
from anorefine.errors import DataError, MetricError
from anorefine.metrics import AnomalyMetrics, sample_scores

S = 32  # dataset image size in tests


def build(name: str, root: Path, *overrides: str) -> DatasetSource:
    return build_dataset(compose_with([f"dataset={name}", f"dataset.root={root}", *overrides]).dataset)


def image_code(record: ImageRecord) -> int:
    with Image.open(record.image_path) as img:
        return code_from_value(np.asarray(img.convert("RGB"), np.float32).mean() / 255)


def assert_masks_belong(records: list[ImageRecord]) -> None:
    """Each defective record's mask covers exactly the top rows its image's code says."""
    images = AnomalyImageDataset(records, S)
    for index, record in enumerate(records):
        mask = images.original_mask(index).numpy()
        rows = mask_rows(image_code(record)) if record.label == 1 else 0
        expected = np.zeros(SIZE, bool)
        expected[:rows] = True
        assert np.array_equal(mask, expected), record.image_path


# ---------------------------------------------------------------- MVTec AD 2


def test_mvtec_ad2_splits_labels_and_masks(tmp_path: Path) -> None:
    root = make_mvtec_ad2(tmp_path / "ad2")
    source = open_dataset("mvtec_ad2", root)
    assert source.list_categories() == ["can", "walnuts"]
    train, validation = source.records("can", "train"), source.records("can", "validation")
    assert [(r.label, r.defect_type, r.mask_path) for r in train] == [(0, "good", None)] * 3
    assert [(r.label, r.defect_type) for r in validation] == [(0, "good")] * 2
    assert all(r.image_path.parent == root / "can" / "validation" / "good" for r in validation)
    test = source.records("can", "test")
    assert [(r.label, r.defect_type) for r in test] == [(1, "bad")] * 2 + [(0, "good")] * 2
    gt = root / "can" / "test_public" / "ground_truth" / "bad"
    assert [r.mask_path for r in test if r.label] == [
        gt / "000_regular_mask.png",
        gt / "001_regular_mask.png",
    ]
    assert_masks_belong(test)


def test_mvtec_ad2_private_splits_are_unlabeled_and_never_scored(tmp_path: Path) -> None:
    root = make_mvtec_ad2(tmp_path / "ad2")
    source = open_dataset("mvtec_ad2", root)
    private = source.records("walnuts", "test_private")
    mixed = source.records("walnuts", "test_private_mixed")
    assert [(r.label, r.mask_path, r.defect_type) for r in private] == [(UNLABELED, None, "test_private")] * 3
    assert len(mixed) == 2 and {r.label for r in mixed} == {UNLABELED}
    with pytest.raises(
        DataError,
        match=re.escape(f"3 of 3 images of category 'walnuts' are unlabeled (e.g. {private[0].image_path})"),
    ):
        require_labeled(private)
    cfg = compose_with(["dataset=mvtec_ad2", f"dataset.root={root}"])
    with pytest.raises(DataError, match="unlabeled"):  # the run's check of the split it scores
        plan.check_test_split(cfg.model, "walnuts", mixed)
    require_labeled(source.records("walnuts", "test"))  # the public test split is labeled
    item = AnomalyImageDataset(private, S)[0]
    assert item["label"] == UNLABELED and item["has_mask"] is False
    with pytest.raises(MetricError, match="unlabeled"):  # metrics never take -1 for a normal image
        AnomalyMetrics().update(torch.rand(2, S, S), labels=torch.tensor([UNLABELED, 0]))


def test_mvtec_ad2_missing_mask_and_undeclared_split(tmp_path: Path) -> None:
    root = make_mvtec_ad2(tmp_path / "ad2")
    mask = root / "can" / "test_public" / "ground_truth" / "bad" / "001_regular_mask.png"
    mask.unlink()
    with pytest.raises(DataError, match=re.escape(f"has no mask: expected {mask}")):
        open_dataset("mvtec_ad2", root).records("can", "test")
    with pytest.raises(DataError, match=r"split 'validation' is not one of mvtec's splits: train, test"):
        open_dataset("mvtec", make_mvtec(tmp_path / "mvtec")).records("bottle", "validation")


# ---------------------------------------------------------------- MVTec LOCO AD


def expected_loco_union(code: int) -> np.ndarray:
    union = np.zeros(SIZE, bool)
    union[: mask_rows(code)] = True
    union[:, : loco_cols(code)] = True
    return union


def test_loco_reads_validation_and_unions_the_mask_files(tmp_path: Path) -> None:
    root = make_loco(tmp_path / "loco")
    source = open_dataset("mvtec_loco", root)
    assert source.list_categories() == ["breakfast_box", "pushpins"]
    assert [r.label for r in source.records("pushpins", "validation")] == [0, 0]
    test = source.records("pushpins", "test")
    kinds = [(r.label, r.defect_type) for r in test]
    assert kinds == [(0, "good")] * 2 + [(1, "logical_anomalies")] * 2 + [(1, "structural_anomalies")]
    defective = [r for r in test if r.label]
    gt = root / "pushpins" / "ground_truth"
    assert [r.mask_path for r in defective] == [
        gt / "logical_anomalies" / "000",
        gt / "logical_anomalies" / "001",
        gt / "structural_anomalies" / "000",
    ]
    images = AnomalyImageDataset(test, S)
    images.check_files()
    for index, record in enumerate(test):
        mask = images.original_mask(index).numpy()
        if not record.label:
            assert not mask.any()
            continue
        assert record.mask_path is not None
        files = sorted(record.mask_path.iterdir())
        values = [np.asarray(Image.open(f)) for f in files]
        assert {int(v.max()) for v in values} == {255, LOCO_SECOND_VALUE}  # defect ids, not all 255
        code = image_code(record)
        rows, cols = mask_rows(code), loco_cols(code)
        assert np.array_equal(mask, np.logical_or.reduce([v > 0 for v in values]))
        assert np.array_equal(mask, expected_loco_union(code))
        assert mask.sum() == rows * SIZE[1] + cols * SIZE[0] - rows * cols
        item = images[index]  # the union, resized like any mask (nearest)
        union = torch.from_numpy(expected_loco_union(code))[None, None].float()
        assert torch.equal(item["mask"], F.interpolate(union, size=(S, S), mode="nearest-exact")[0])


def test_loco_mask_folder_errors(tmp_path: Path) -> None:
    root = make_loco(tmp_path / "loco")
    folder = root / "breakfast_box" / "ground_truth" / "structural_anomalies" / "000"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "001.png")
    records = open_dataset("mvtec_loco", root).records("breakfast_box", "test")
    with pytest.raises(DataError, match=re.escape(f"mask {folder / '001.png'} is 8x8 but image")):
        AnomalyImageDataset(records, S).check_files()
    for file in folder.iterdir():
        file.unlink()
    with pytest.raises(DataError, match=re.escape(f"mask folder {folder} holds no mask files")):
        AnomalyImageDataset(records, S).check_files()
    folder.rmdir()
    with pytest.raises(DataError, match=re.escape(f"has no mask: expected {folder};")):
        open_dataset("mvtec_loco", root).records("breakfast_box", "test")


# ---------------------------------------------------------------- BTAD and MPDD


def test_btad_reads_ok_ko_and_matches_masks_across_suffixes(tmp_path: Path) -> None:
    root = make_btad(tmp_path / "btad")
    source = open_dataset("btad", root)
    assert source.list_categories() == ["01", "02"]
    for category, suffix in (("01", ".bmp"), ("02", ".png")):
        train = source.records(category, "train")
        assert [(r.label, r.defect_type, r.image_path.suffix) for r in train] == [(0, "ok", suffix)] * 3
        test = source.records(category, "test")
        assert [(r.label, r.defect_type) for r in test] == [(1, "ko")] * 2 + [(0, "ok")] * 2
        gt = root / category / "ground_truth" / "ko"
        assert [r.mask_path for r in test if r.label] == [gt / "0000.png", gt / "0001.png"]
        assert_masks_belong(test)
    (root / "01" / "ground_truth" / "ko" / "0001.png").unlink()
    with pytest.raises(DataError, match=r"0001\.bmp has no mask"):
        source.records("01", "test")


def test_mpdd_reads_the_mvtec_layout_in_official_order(tmp_path: Path) -> None:
    root = make_mpdd(tmp_path / "mpdd")
    source = open_dataset("mpdd", root)
    assert source.list_categories() == ["bracket_black", "tubes"]  # notes/ (not a category) left out
    test = source.records("tubes", "test")
    assert [(r.label, r.defect_type) for r in test] == [(0, "good")] * 2 + [(1, "hole")] * 2 + [
        (1, "scratches")
    ] * 2
    assert len(source.records("tubes", "train")) == 3
    assert_masks_belong(test)


# ---------------------------------------------------------------- Real-IAD


def test_realiad_reads_the_split_files_with_views_and_samples(tmp_path: Path) -> None:
    root = make_realiad(tmp_path / "realiad")
    source = build("realiad", root)
    assert source.list_categories() == ["audiojack", "pcb"]
    train = source.records("pcb", "train")
    assert len(train) == 10 and {r.label for r in train} == {0}
    assert sorted({r.sample_id for r in train}) == ["OK/S0001", "OK/S0002"]
    test = source.records("pcb", "test")
    rows = [(r.sample_id, r.image_path.stem.split("_")[-2], r.label, r.defect_type) for r in test]
    expected = []
    for split, anomaly, number, shown in REALIAD_SAMPLES:
        folder = f"OK/S{number:04d}" if anomaly == "OK" else f"NG/{anomaly}/S{number:04d}"
        for view in ("C1", "C2", "C3", "C4", "C5"):
            label = int(view in shown)
            expected += [(folder, view, label, anomaly if label else "good")] if split == "test" else []
    assert sorted(rows) == sorted(expected)
    assert all((r.mask_path is not None) == bool(r.label) for r in test)
    assert all(r.mask_path.name == f"{r.image_path.stem}_mask.png" for r in test if r.mask_path)
    assert_masks_belong(test)


def test_realiad_settings_views_resolution_and_json_variant(tmp_path: Path) -> None:
    root = make_realiad(tmp_path / "realiad")
    make_realiad(root, categories=("pcb",), variant="realiad_jsons_sv")
    source = build("realiad", root, "dataset.views=[C1,C3]", "dataset.json_variant=realiad_jsons_sv")
    assert source.views == ("C1", "C3")  # the constructor's own settings come from the node
    test = source.records("pcb", "test")
    assert len(test) == 6 and {r.image_path.stem.split("_")[-2] for r in test} == {"C1", "C3"}
    assert sum(r.label for r in test) == 2  # S0004's C1 and S0005's C3
    with pytest.raises(
        DataError, match=r"realiad_jsons_sv/audiojack\.json does not exist.*dataset\.json_variant"
    ):
        source.records("audiojack", "test")
    cfg = compose_with(["dataset=realiad", f"dataset.root={root}", "dataset.resolution=512"])
    assert cfg.dataset.resolution == "512"
    with pytest.raises(DataError, match=r"realiad_512 does not exist.*dataset\.resolution.*\(1024\)"):
        build_dataset(cfg.dataset).list_categories()
    with pytest.raises(DataError, match=r"dataset\.views=\['C1', 'C9'\]: C9 is not a Real-IAD view"):
        build("realiad", root, "dataset.views=[C1,C9]")


def test_realiad_split_file_errors_name_the_item(tmp_path: Path) -> None:
    root = make_realiad(tmp_path / "realiad", categories=("pcb",))
    path = root / "realiad_jsons" / "realiad_jsons" / "pcb.json"
    content = json.loads(path.read_text())
    content["test"][3] = {"image_path": "OK/S0003/x.jpg"}
    path.write_text(json.dumps(content))
    source = open_dataset("realiad", root)
    with pytest.raises(DataError, match=re.escape(f"{path} test[3]: expected an object with image_path")):
        source.records("pcb", "test")
    content["test"][3] = {"image_path": "OK/S0003/missing_C1_.jpg", "anomaly_class": "OK"}
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"test\[3\]: image .*missing_C1_\.jpg does not exist"):
        source.records("pcb", "test")
    path.write_text(json.dumps({"meta": {}, "train": []}))
    with pytest.raises(DataError, match="has no 'test' list"):
        source.records("pcb", "test")
    path.write_text("{not json")
    with pytest.raises(DataError, match="cannot read Real-IAD split file"):
        source.records("pcb", "test")


# ---------------------------------------------------------------- the multi-view sample-level score


def reference_sample_scores(ids: list[str], scores: np.ndarray, labels: np.ndarray, reduce: str) -> tuple:
    order = list(dict.fromkeys(ids))
    members = [np.array([i == sample for i in ids]) for sample in order]
    reducer = np.max if reduce == "max" else np.mean
    return (
        order,
        np.array([reducer(scores[m]) for m in members]),
        np.array([labels[m].any() for m in members]),
    )


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_sample_scores_equal_numpy(reduce: str) -> None:
    rng = np.random.default_rng(3)
    ids = [f"S{n:02d}" for n in rng.integers(0, 9, 60)]
    scores, labels = rng.random(60), rng.random(60) < 0.2
    got_ids, got_scores, got_labels = sample_scores(ids, scores, labels, reduce)
    want_ids, want_scores, want_labels = reference_sample_scores(ids, scores, labels, reduce)
    assert got_ids == want_ids
    np.testing.assert_allclose(got_scores.numpy(), want_scores, rtol=1e-12)
    assert np.array_equal(got_labels.numpy(), want_labels)


def test_sample_scores_over_realiad_records(tmp_path: Path) -> None:
    test = open_dataset("realiad", make_realiad(tmp_path / "r", categories=("pcb",))).records("pcb", "test")
    scores = np.arange(len(test), dtype=np.float64)
    ids, per_sample, anomalous = sample_scores(
        [r.sample_id for r in test], scores, np.array([r.label for r in test])
    )
    assert ids == ["NG/AK/S0004", "NG/QS/S0005", "OK/S0003"]  # sorted records: first appearance
    assert per_sample.tolist() == [4.0, 9.0, 14.0] and anomalous.tolist() == [True, True, False]
    with pytest.raises(MetricError, match="sample_ids hold None"):
        sample_scores(["a", None], scores[:2], np.zeros(2))
    with pytest.raises(MetricError, match="reduce='median'"):
        sample_scores(["a"], scores[:1], np.zeros(1), "median")  # type: ignore[arg-type]
