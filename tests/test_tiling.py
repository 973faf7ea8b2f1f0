"""High resolution (docs/high_resolution.md): tile offsets, blend windows, the stitch against a
whole-image run, fitting on tiles, the settings' checks, the high-resolution stand-in, and the
MVTec AD 2 protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RUN, compose_with, run_train
from PIL import Image

from anorefine import plan
from anorefine.data.hires import ensure_hires_standin
from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.detectors.tiling import TiledDetector, Tiling, axis_weights
from anorefine.errors import AnorefineError

STRIDE = 8


class PooledCells(Detector):
    """A detector whose cell sees its 3x3 neighbourhood (zero-padded at the input's border): scoring a
    tile differs from scoring the whole image within one cell of the tile's edge."""

    stride = STRIDE
    receptive_field = 3 * STRIDE

    def __init__(self) -> None:
        super().__init__()
        self.fitted_shapes: list[tuple[int, ...]] = []

    def fit(self, normal_loader: object) -> None:
        for batch in normal_loader:  # type: ignore[attr-defined]
            self.fitted_shapes.append(tuple(batch["image"].shape))

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        cells = F.avg_pool2d(images, STRIDE)
        features = F.avg_pool2d(cells, 3, stride=1, padding=1, count_include_pad=True)
        anomaly_map = features.pow(2).sum(1, keepdim=True)
        return self.output(anomaly_map, anomaly_map.flatten(1).amax(1), features)


def images(size: tuple[int, int] = (136, 200), batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0))


def test_tiles_cover_the_axis_and_end_flush_with_it() -> None:
    tiling = Tiling(tile=256, overlap=32)
    starts = tiling.starts(2048)
    assert starts == [0, 224, 448, 672, 896, 1120, 1344, 1568, 1792]  # step 224, last flush with 2048
    assert Tiling(tile=64, overlap=16).starts(136) == [0, 48, 72]
    assert Tiling(tile=64).starts(64) == [0] and Tiling(tile=64).starts(40) == [0]


@pytest.mark.parametrize("window", ["hann", "crop"])
def test_the_windows_weigh_every_cell_and_crop_picks_one_tile(window: str) -> None:
    starts = [0, 6, 9]  # cells; tiles of 8 on an axis of 17
    weights = axis_weights(starts, 8, 17, window)  # type: ignore[arg-type]
    assert bool((weights.sum(0) > 0).all())
    for index, start in enumerate(starts):  # no weight outside a tile
        outside = torch.ones(17, dtype=torch.bool)
        outside[start : start + 8] = False
        assert bool((weights[index, outside] == 0).all())
    if window == "crop":
        assert torch.equal(weights.sum(0), torch.ones(17))
        # tile centres 4, 10, 13: cell 5 (centre 5.5) goes to tile 0, cell 8 (8.5) to tile 1
        assert weights[:, 5].tolist() == [1.0, 0.0, 0.0] and weights[:, 8].tolist() == [0.0, 1.0, 0.0]


def test_crop_stitch_equals_the_whole_image_when_the_overlap_holds_the_receptive_field() -> None:
    detector = PooledCells().eval()
    batch = images()
    whole = detector(batch)
    tiled = TiledDetector(detector, Tiling(tile=64, overlap=16, window="crop", batch=5))(batch)
    assert tiled.anomaly_map.shape == whole.anomaly_map.shape == (2, 1, 17, 25)
    torch.testing.assert_close(tiled.anomaly_map, whole.anomaly_map, rtol=0, atol=1e-6)
    torch.testing.assert_close(tiled.features, whole.features, rtol=0, atol=1e-6)
    assert (tiled.stride, tiled.receptive_field) == (STRIDE, 3 * STRIDE)
    # too little overlap for the 3x3 cell support, or a window that mixes in tile borders: not equal
    narrow = TiledDetector(detector, Tiling(tile=64, overlap=8, window="crop"))(batch)
    hann = TiledDetector(detector, Tiling(tile=64, overlap=16, window="hann"))(batch)
    for other in (narrow, hann):
        assert (other.anomaly_map - whole.anomaly_map).abs().max() > 1e-3


def test_hann_blend_of_equal_tiles_keeps_their_value() -> None:
    class Constant(PooledCells):
        def forward(self, images: torch.Tensor) -> DetectorOutput:
            grid = torch.full((len(images), 1, images.shape[-2] // STRIDE, images.shape[-1] // STRIDE), 2.5)
            return self.output(grid, grid.flatten(1).amax(1), grid.repeat(1, 4, 1, 1))

    out = TiledDetector(Constant(), Tiling(tile=64, overlap=24))(images())
    torch.testing.assert_close(out.anomaly_map, torch.full_like(out.anomaly_map, 2.5))


def test_image_score_is_the_highest_tile_score() -> None:
    detector = PooledCells().eval()
    batch = images(batch=1)
    tiled = TiledDetector(detector, Tiling(tile=64, overlap=16))
    tiles, rows, cols = tiled.tiles(batch)
    assert tiles.shape == (len(rows) * len(cols), 3, 64, 64)
    assert torch.equal(tiled(batch).image_score, detector(tiles).image_score.amax()[None])


def test_fit_sees_tiles_in_batches() -> None:
    detector = PooledCells()
    loader = [{"image": images(batch=2)}, {"image": images(batch=1)}]
    TiledDetector(detector, Tiling(tile=64, overlap=16, batch=4)).fit(loader)  # type: ignore[arg-type]
    # 3 x 4 = 12 tiles per image: 24 in batches of 4, then 12
    assert detector.fitted_shapes == [(4, 3, 64, 64)] * 6 + [(4, 3, 64, 64)] * 3


@pytest.mark.parametrize(
    ("tiling", "message"),
    [
        (Tiling(tile=60, overlap=16), "eval.tiling.tile=60 is not a multiple of the detector's stride 8"),
        (Tiling(tile=64, overlap=12), "eval.tiling.overlap=12 is not a multiple"),
        (Tiling(tile=64, overlap=64), "eval.tiling.overlap=64 must lie in [0, tile=64)"),
    ],
)
def test_tiles_off_the_detector_grid_fail_naming_the_setting(tiling: Tiling, message: str) -> None:
    with pytest.raises(AnorefineError, match=message.replace("[", r"\[").replace(")", r"\)")):
        TiledDetector(PooledCells(), tiling)


def test_a_transductive_detector_cannot_be_tiled() -> None:
    class Mutual(PooledCells):
        transductive = True

    with pytest.raises(AnorefineError, match="not available for a detector that scores images against"):
        TiledDetector(Mutual(), Tiling(tile=64))


def test_the_tile_is_the_model_input_size() -> None:
    ok = ["model.image_size=128", "dataset.image_size=512", "eval.tiling.tile=128"]
    plan.check_config(compose_with(ok))
    with pytest.raises(AnorefineError, match=r"eval.tiling.tile=96 differs from model.image_size=128"):
        plan.check_config(compose_with(["model.image_size=128", "eval.tiling.tile=96"]))


@pytest.mark.slow
def test_a_tiled_run_scores_the_demo_at_twice_its_size(tmp_path: Path) -> None:
    """PatchCore on 128-pixel tiles of the demo's images at 256: maps and metrics at 256."""
    run = run_train(
        [*TINY_RUN, "dataset.categories=[brick]", "dataset.image_size=256", "eval.tiling.tile=128",
         "eval.tiling.overlap=32", "eval.bootstrap.replicates=0"],
        tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = run.results
    assert results["eval_resolution"]["size"] == [256, 256]
    base = results["metrics"]["brick"]["base"]
    assert 0.5 < base["pixel_auroc"] <= 1.0 and 0.5 < base["image_auroc"] <= 1.0


def test_the_high_resolution_stand_in_paints_small_defects_in_one_square(tmp_path: Path) -> None:
    root = ensure_hires_standin(
        tmp_path / "hires", size=256, patch=64, counts=(2, 1, 1, 1), kinds=("scratch", "hole")
    )
    carpet = root / "carpet"
    assert sorted(p.name for p in (carpet / "train" / "good").iterdir()) == ["000.png", "001.png"]
    assert [p.name for p in (carpet / "validation" / "good").iterdir()] == ["000.png"]
    for kind in ("scratch", "hole"):
        image = np.asarray(Image.open(carpet / "test" / kind / "000.png"))
        mask = np.asarray(Image.open(carpet / "ground_truth" / kind / "000_mask.png")) > 0
        assert image.shape == (256, 256, 3) and mask.shape == (256, 256)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert rows.size and rows[-1] - rows[0] < 64 and cols[-1] - cols[0] < 64  # inside one 64² square
        assert 0.001 * 64**2 <= mask.sum() <= 0.03 * 64**2  # the painters' area, of the square
    again = ensure_hires_standin(
        tmp_path / "hires", size=256, patch=64, counts=(2, 1, 1, 1), kinds=("scratch", "hole")
    )
    assert again == root  # the marker matches: nothing is drawn again


def test_protocol_mvtec_ad2_sets_its_evaluation() -> None:
    cfg = compose_with(["dataset=mvtec_ad2", "protocol=mvtec_ad2"])
    assert cfg.eval.resolution == "original" and cfg.eval.aupro_limit == 0.05
    assert (cfg.eval.threshold.rule, cfg.eval.threshold.k, cfg.eval.threshold.source) == (
        "mean_std",
        3.0,
        "validation",
    )
