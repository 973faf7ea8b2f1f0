"""MVTec AD 2 server files: paths, dtype, sizes and values as MVTec's upload checker reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from anorefine.errors import AnorefineError
from anorefine.submission import FLOAT16_MAX, submission_files, write_submission

IMAGES = {"can/test_private/000_regular.png": (30, 44), "vial/test_private_mixed/012_mixed.png": (25, 17)}


def test_maps_and_masks_keep_the_images_relative_paths_sizes_and_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for image, shape in IMAGES.items():
        values = rng.gamma(2.0, size=shape) * 100
        mask = values > 300
        written = write_submission(tmp_path, image, values, mask)
        stem = image.removesuffix(".png")
        assert written == (
            tmp_path / f"anomaly_images/{stem}.tiff",
            tmp_path / f"anomaly_images_thresholded/{stem}.png",
        )
        stored = tifffile.imread(written[0])
        assert stored.dtype == np.float16 and stored.shape == shape  # the checker's dtype, the image's size
        assert np.array_equal(stored, values.astype(np.float16))
        with Image.open(written[1]) as png:
            assert png.mode == "L" and png.size == (shape[1], shape[0])
            pixels = np.asarray(png)
        assert set(np.unique(pixels)) <= {0, 255} and np.array_equal(pixels == 255, mask)
    found = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert found == sorted(
        [f"anomaly_images/{i.removesuffix('.png')}.tiff" for i in IMAGES]
        + [f"anomaly_images_thresholded/{i.removesuffix('.png')}.png" for i in IMAGES]
    )


def test_without_a_mask_only_the_map_is_written(tmp_path: Path) -> None:
    map_path, mask_path = write_submission(tmp_path, "rice/test_private/003_regular.png", np.zeros((4, 5)))
    assert map_path.is_file() and mask_path is None
    assert not (tmp_path / "anomaly_images_thresholded").exists()


@pytest.mark.parametrize(
    ("image", "values", "mask", "message"),
    [
        ("/abs/000_regular.png", np.zeros((3, 3)), None, "relative to the dataset root"),
        ("can/../000_regular.png", np.zeros((3, 3)), None, "relative to the dataset root"),
        ("can/test_private", np.zeros((3, 3)), None, "must be a file path"),
        ("can/test_private/000_regular.png", np.zeros((1, 3, 3)), None, r"must be 2-D \(H, W\)"),
        ("can/test_private/000_regular.png", np.full((3, 3), 2 * FLOAT16_MAX), None, "beyond float16"),
        ("can/test_private/000_regular.png", np.full((3, 3), np.nan), None, "or NaN"),
        ("can/test_private/000_regular.png", np.zeros((3, 3)), np.zeros((3, 4), bool), "of its map's shape"),
        ("can/test_private/000_regular.png", np.zeros((3, 3)), np.full((3, 3), 0.5), "must be a bool"),
    ],
)
def test_bad_input_is_a_one_line_error_before_writing(
    tmp_path: Path, image: str, values: np.ndarray, mask: np.ndarray | None, message: str
) -> None:
    with pytest.raises(AnorefineError, match=message):
        write_submission(tmp_path, image, values, mask)
    assert not any(tmp_path.iterdir())


def test_submission_files_are_the_servers_names() -> None:
    assert submission_files(Path("out"), "walnuts/test_private_mixed/100_mixed.png") == (
        Path("out/anomaly_images/walnuts/test_private_mixed/100_mixed.tiff"),
        Path("out/anomaly_images_thresholded/walnuts/test_private_mixed/100_mixed.png"),
    )
