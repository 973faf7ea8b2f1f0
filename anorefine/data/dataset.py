"""Torch dataset over image records: loads, converts to RGB and resizes image and mask."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from anorefine.data.records import IMAGE_SUFFIXES, ImageRecord, ImageResize, MaskResize, is_image_file
from anorefine.errors import DataError
from anorefine.shapes import spatial_size
from anorefine.stages import StageClock

_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image file, turning any decoder failure into a DataError."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read {what} {path}: {err}; replace or remove the file") from err


def image_size(path: Path) -> tuple[int, int]:
    """An image's (W, H), read from its header."""
    return _header_size(path, "image")


def _header_size(path: Path, what: str) -> tuple[int, int]:
    """(W, H) from the file's header, without decoding it."""
    try:
        with Image.open(path) as img:
            return img.size
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read {what} {path}: {err}; replace or remove the file") from err


def _to_rgb(img: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]; 16-bit/int grayscale is scaled by 65535, float taken as is."""
    if img.mode.startswith(("I", "F")):
        gray = np.asarray(img, dtype=np.float32)
        if img.mode.startswith("I"):
            gray = gray / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) float32 RGB in [0, 1], at its own size."""
    return _to_rgb(_open(path, "image"))


def _to_mask(img: Image.Image) -> np.ndarray:
    """(H, W) bool: anomalous where any colour channel is non-zero (alpha ignored)."""
    if "A" in img.getbands():
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr > 0


def mask_files(path: Path) -> list[Path]:
    """The files of a record's mask: the file itself, or the image files of a mask directory, sorted
    (MVTec LOCO AD ships one file per defect of an image; their union is the image's mask)."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if is_image_file(p))
    if not files:
        raise DataError(
            f"mask folder {path} holds no mask files (*{', *'.join(IMAGE_SUFFIXES)}): restore its masks"
        )
    return files


def _check_mask_size(
    path: Path, size: tuple[int, int], record: ImageRecord, image_size: tuple[int, int]
) -> None:
    """A mask file's (W, H) must be its image's."""
    if size != image_size:
        raise DataError(
            f"mask {path} is {size[0]}x{size[1]} but image {record.image_path} is "
            f"{image_size[0]}x{image_size[1]}: the mask does not belong to this image"
        )


_MASK_RULES = {"above_half": lambda m: m > 127.5, "full": lambda m: m == 255, "nonzero": lambda m: m > 0}


def resize_mask(mask: np.ndarray, size: int, rule: MaskResize) -> torch.Tensor:
    """(H0,W0) bool mask -> (1,size,size) float {0,1} by ``rule``."""
    if mask.shape == (size, size):
        return torch.from_numpy(mask)[None].float()
    if rule == "nearest":
        grid = torch.from_numpy(mask)[None, None].float()
        return F.interpolate(grid, size=(size, size), mode="nearest-exact")[0]
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(_MASK_RULES[rule](np.asarray(resized)))[None].float()


class AnomalyImageDataset(Dataset):
    """Items: image (3,S,S) float in [0,1], mask (1,S,S) in {0,1}, label, has_mask, index, original_size.

    `original_size` is a LongTensor (H0, W0) of the file's size, so default collation gives (B, 2);
    `original_mask(index)` reads an item's mask at that size.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        image_size: int,
        image_resize: ImageResize = "bilinear",
        mask_resize: MaskResize = "nearest",
        clock: StageClock | None = None,
    ) -> None:
        """``clock``: charges each item's reading to its ``read`` stage (in the loading process)."""
        self.records = list(records)
        self.image_size = int(image_size)
        self.image_resize, self.mask_resize = image_resize, mask_resize
        self.clock = clock

    def __len__(self) -> int:
        return len(self.records)

    def _resize(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        if spatial_size(x) == size:
            return x
        if mode == "bilinear":
            return F.interpolate(x[None], size=size, mode=mode, antialias=True, align_corners=False)[0]
        return F.interpolate(x[None], size=size, mode=mode)[0]

    @staticmethod
    def _file_mask(record: ImageRecord, image_size: tuple[int, int]) -> torch.Tensor:
        """The record's (H0, W0) bool mask at the file's size: the union of its mask files (``mask_files``),
        each of whose (W, H) must equal ``image_size``."""
        if record.mask_path is None:
            raise DataError(f"{record.image_path} has no mask to read")
        masks = []
        for path in mask_files(record.mask_path):
            mask_img = _open(path, "mask")
            _check_mask_size(path, mask_img.size, record, image_size)
            masks.append(_to_mask(mask_img))
        return torch.from_numpy(np.logical_or.reduce(masks))

    def check_files(self) -> None:
        """Read every image's and mask's header (nothing decoded): each must be readable and each mask
        the size of its image, so a bad file fails the run before any model is fitted."""
        for record in self.records:
            size = _header_size(record.image_path, "image")
            if record.label == 1 and record.mask_path is not None:
                for path in mask_files(record.mask_path):
                    _check_mask_size(path, _header_size(path, "mask"), record, size)

    def original_mask(self, index: int) -> torch.Tensor:
        """Item ``index``'s (H0, W0) bool mask at the original image size, not resized (for
        ``eval.resolution=original``); all False for good images and images without a mask."""
        record = self.records[index]
        size = _open(record.image_path, "image").size
        if record.label == 1 and record.mask_path is not None:
            return self._file_mask(record, size)
        return torch.zeros(size[1], size[0], dtype=torch.bool)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with nullcontext() if self.clock is None else self.clock.stage("read"):
            return self._item(index)

    def _item(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        img = _open(record.image_path, "image")
        height, width = img.height, img.width
        size = (self.image_size, self.image_size)
        if self.image_resize == "bicubic" and img.size != size and not img.mode.startswith(("I", "F")):
            resized = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
            image = torch.from_numpy(_to_rgb(resized)).permute(2, 0, 1)
        else:
            image = self._resize(torch.from_numpy(_to_rgb(img)).permute(2, 0, 1), "bilinear").clamp_(0.0, 1.0)
        mask = torch.zeros(1, *size)
        if record.label == 1 and record.mask_path is not None:
            mask = resize_mask(self._file_mask(record, img.size).numpy(), self.image_size, self.mask_resize)
        return {
            "image": image.contiguous(),
            "mask": mask,
            "label": record.label,
            "has_mask": record.label == 0 or record.mask_path is not None,
            "index": index,
            "folder": record.defect_type,
            "original_size": torch.tensor([height, width], dtype=torch.long),
        }
