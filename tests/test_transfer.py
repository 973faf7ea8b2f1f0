"""The transfer protocol: its dataset, the held-out kind selection, its table; and the detector fit cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, run_train
from PIL import Image
from torch.utils.data import DataLoader

from anorefine import fits
from anorefine.data import AnomalyImageDataset
from anorefine.data import transfer as transfer_module
from anorefine.data.defects import DEFECT_KINDS, area_range
from anorefine.data.textures import TEXTURES, load_texture, normal_image
from anorefine.datasets import open_dataset
from anorefine.datasets.base import select_defect_types
from anorefine.detectors.patchcore import PatchCoreDetector
from anorefine.errors import DataError
from anorefine.transfer_matrix import read_cells, render


@pytest.fixture(scope="module")
def transfer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transfer dataset with 3 train, 2 good and 1 defective image per kind and texture."""
    patch = pytest.MonkeyPatch()
    patch.setattr(transfer_module, "N_TRAIN", 3)
    patch.setattr(transfer_module, "N_TEST_GOOD", 2)
    patch.setattr(transfer_module, "N_PER_KIND", 1)
    try:
        yield transfer_module.ensure_transfer_dataset(tmp_path_factory.mktemp("data") / "transfer")
    finally:
        patch.undo()


def test_transfer_dataset_holds_every_kind_on_every_texture(transfer_root: Path) -> None:
    for texture in TEXTURES:
        assert len(open_dataset("transfer", transfer_root).records(texture, "train")) == 3
        test = open_dataset("transfer", transfer_root).records(texture, "test")
        assert sorted({r.defect_type for r in test}) == sorted(("good", *DEFECT_KINDS))
        for record in (r for r in test if r.label):
            mask = np.asarray(Image.open(record.mask_path)) > 0
            low, high = area_range(record.defect_type)
            assert low <= mask.mean() <= high


def test_procedural_textures_are_deterministic_and_differ_by_seed() -> None:
    for name in ("woven", "carpet", "wood"):
        texture, _ = load_texture(name, 0)
        assert texture.shape == (1024, 1024, 3) and texture.dtype == np.uint8 and texture.std() > 5
        assert np.array_equal(texture, load_texture(name, 0)[0])
        assert not np.array_equal(texture, load_texture(name, 1)[0])
    texture, tint = load_texture("woven", 0)
    image = normal_image(texture, tint, np.random.default_rng(0))
    assert image.shape == (256, 256, 3)


def test_defect_types_keep_good_images_and_the_held_out_kind(transfer_root: Path) -> None:
    records = open_dataset("transfer", transfer_root).records("woven", "test")
    kept = select_defect_types(records, ["dent"])
    assert sorted({r.defect_type for r in kept}) == ["dent", "good"]
    assert sum(r.label == 0 for r in kept) == sum(r.label == 0 for r in records)
    assert select_defect_types(records, None) == records
    with pytest.raises(DataError, match=r"'dnet' is not a defect type of category 'woven'"):
        select_defect_types(records, ["dnet"])


def _results(path: Path, kind: str, refiner: str, base: float, refined: float) -> None:
    """A results.json of one transfer job with two textures."""
    metrics = {
        texture: {
            "base": {"pixel_ap": base, "pixel_auroc": 0.9},
            "refined": {"pixel_ap": refined + shift, "pixel_auroc": 0.9 + shift},
        }
        for texture, shift in (("brick", 0.0), ("woven", 0.02))
    }
    metrics["mean"] = metrics["brick"]
    path.mkdir(parents=True)
    payload = {"config": {"dataset": {"defect_types": [kind]}}, "refiner": refiner, "metrics": metrics}
    (path / "results.json").write_text(json.dumps({**payload, "git_commit": "abcdef0123"}))


def test_transfer_table_compares_each_refiner_with_its_base(tmp_path: Path) -> None:
    _results(tmp_path / "a", "dent", "ard", 0.10, 0.20)
    _results(tmp_path / "b", "dent", "f2pad", 0.10, 0.05)
    _results(tmp_path / "c", "thread", "ard", 0.30, 0.30)
    cells, commits = read_cells(tmp_path)
    assert len(cells) == 6 and commits == {"abcdef0123"}
    text = render(cells, {"commit": "abcdef0"})
    # dent, all textures: base 10, ARD (20 + 22) / 2 = 21 (+11), F2PAD (5 + 7) / 2 = 6 (-4)
    assert "| dent | 2 | 10.00 | 21.00 (+11.00) | 6.00 (-4.00) |" in text
    # held-out textures only (woven): ARD 22 (+12); worst per-texture AUROC change +0.00 (brick)
    assert "| dent | 1 | 10.00 | 22.00 (+12.00) | 7.00 (-3.00) |" in text
    assert "| thread | 2 | 30.00 | 31.00 (+1.00) | – |" in text
    assert "| dent | woven * | 10.00 → 22.00 | 90.00 → 92.00 | 10.00 → 7.00 | 90.00 → 92.00 |" in text


def test_a_saved_fit_reloads_into_an_identical_detector(demo_root: Path, tmp_path: Path) -> None:
    records = open_dataset("demo", demo_root).records("brick", "train")[:4]
    train_set = AnomalyImageDataset(records, 64)
    torch.manual_seed(0)
    detector = PatchCoreDetector(image_size=64, coreset_ratio=0.2).eval()
    before = fits.snapshot(detector)
    detector.fit(DataLoader(train_set, batch_size=4))
    state = fits.fitted_state(detector, before)
    assert set(state) == {"model.memory_bank"}  # the pretrained backbone is not saved again
    fits.save_fit(tmp_path / "fit.pt", state)
    fresh = PatchCoreDetector(image_size=64, coreset_ratio=0.2).eval()
    fits.load_fit(fresh, tmp_path / "fit.pt")
    images = torch.stack([train_set[i]["image"] for i in range(2)])
    assert torch.equal(fresh(images).anomaly_map, detector(images).anomaly_map)
    key = fits.fit_key({"name": "patchcore"}, train_set, seed=0)
    assert key != fits.fit_key({"name": "patchcore"}, AnomalyImageDataset(records[:3], 64), seed=0)
    assert key != fits.fit_key({"name": "patchcore"}, train_set, seed=1)


@pytest.mark.slow
def test_runs_with_the_same_fit_share_it(demo_root: Path, tmp_path: Path) -> None:
    args = [
        f"dataset.root={demo_root}",
        "dataset.categories=[brick]",
        *TINY_RUN,
        f"paths.fit_cache={tmp_path}/fits",
    ]
    first = run_train(args, tmp_path / "a")
    assert first.returncode == 0, first.stderr[-2000:]
    saved = list((tmp_path / "fits").glob("*/brick.pt"))
    assert len(saved) == 1
    second = run_train([*args, "refiner.sigma=2"], tmp_path / "b")
    assert second.returncode == 0, second.stderr[-2000:]
    assert list((tmp_path / "fits").glob("*/brick.pt")) == saved  # reused, not fitted again
    assert second.results["metrics"]["brick"]["base"] == first.results["metrics"]["brick"]["base"]
    other = run_train([*args, "seed=1"], tmp_path / "c")
    assert other.returncode == 0 and len(list((tmp_path / "fits").glob("*/brick.pt"))) == 2
