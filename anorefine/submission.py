"""MVTec AD 2 evaluation-server files for its private test sets (``test_private``, ``test_private_mixed``).

The format, as MVTec's public code states it (``MVTecAD2_public_code_utils``, 2025:
``check_and_prepare_data_for_upload.py`` with ``src/utils_check.py``, the checker to run before an
upload, and the dataset class ``mvtec_ad_2_public_offline.py``)::

    <folder>/anomaly_images/<object>/<split>/<NNN>_<regular|mixed>.tiff              required
    <folder>/anomaly_images_thresholded/<object>/<split>/<NNN>_<regular|mixed>.png   optional

- each file keeps its test image's path relative to the dataset root with the suffix changed, e.g.
  ``can/test_private/000_regular.png`` -> ``anomaly_images/can/test_private/000_regular.tiff``;
- ``anomaly_images``: a single-channel TIFF per test image, dtype **float16** (the checker rejects
  any other); the threshold-free metrics are computed from them;
- ``anomaly_images_thresholded``: a single-channel PNG per test image, values 0 (normal) and 255
  (anomalous) only; the threshold-dependent metrics (SegF1) need them, without them the checker only
  warns (and suggests mean + 3·σ of validation scores as a first threshold);
- an upload holds every object (can, fabric, fruit_jelly, rice, sheet_metal, vial, wallplugs,
  walnuts), both splits, every image and nothing else; the checker then packs ``<folder>.tar.gz``.

Not confirmed: the size. The checker does not look at it; MVTec's local evaluation code says maps
"must match" the original images' size, so each file here is at its image's own (H, W)
(``map_files.at_size``). float16 holds values up to 65504: larger ones are refused (divide the maps,
and the threshold, by a constant first: no ranking changes).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import tifffile

from anorefine.atomic import write_atomic
from anorefine.errors import AnorefineError
from anorefine.map_files import write_mask

MAPS_DIR = "anomaly_images"
MASKS_DIR = "anomaly_images_thresholded"
#: The largest value a float16 anomaly image holds.
FLOAT16_MAX = float(np.finfo(np.float16).max)


def submission_files(folder: Path, image: str | Path) -> tuple[Path, Path]:
    """(map, mask) paths in ``folder`` for a test image given relative to the dataset root."""
    relative = PurePosixPath(Path(image).as_posix())
    if relative.is_absolute() or ".." in relative.parts or not relative.suffix:
        raise AnorefineError(
            f"submission image {image} must be a file path relative to the dataset root, "
            "e.g. can/test_private/000_regular.png"
        )
    return (
        Path(folder) / MAPS_DIR / relative.with_suffix(".tiff"),
        Path(folder) / MASKS_DIR / relative.with_suffix(".png"),
    )


def write_submission(
    folder: Path, image: str | Path, values: np.ndarray, mask: np.ndarray | None = None
) -> tuple[Path, Path | None]:
    """Write a test image's anomaly map (float16 TIFF) and, if given, its mask (0/255 PNG) in the
    server's layout (module docstring); ``values`` and ``mask`` at the image's own (H, W)."""
    map_path, mask_path = submission_files(folder, image)
    values = np.asarray(values)
    if values.ndim != 2:
        raise AnorefineError(f"the anomaly map of {image} must be 2-D (H, W), got shape {values.shape}")
    largest = float(np.abs(values).max(initial=0.0))
    if not np.isfinite(values).all() or largest > FLOAT16_MAX:
        raise AnorefineError(
            f"the anomaly map of {image} holds {largest:g}, beyond float16 ({FLOAT16_MAX:g}), or NaN: "
            "divide the maps (and the threshold) by a constant before writing"
        )
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != values.shape or not np.isin(mask, (0, 1)).all():
            raise AnorefineError(
                f"the mask of {image} must be a bool (H, W) array of its map's shape {values.shape}, "
                f"got {mask.dtype} {mask.shape}"
            )
    write_atomic(map_path, lambda temp: tifffile.imwrite(temp, values.astype(np.float16)))
    if mask is None:
        return map_path, None
    write_mask(mask_path, mask.astype(bool))
    return map_path, mask_path
