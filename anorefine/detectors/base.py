"""The detector contract every base detector implements (docs/design.md, Contracts)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from anorefine.data.records import BlurPadding

if TYPE_CHECKING:
    import lightning as L

    from anorefine.datasets import DatasetSource


class BaselineBlur(NamedTuple):
    """How a detector's own code turns its patch map into a pixel map, the baseline every refiner is
    compared with: bilinear upsampling (``align_corners``), then a Gaussian blur of ``sigma`` (0: none)
    with the border ``padding`` (``reflect``: anomalib's; ``symmetric``: scipy's, the official
    AnomalyCLIP code's; set by the run from ``eval.blur_padding``). Defined here once; a tuple, which
    Lightning's collection helpers carry through as it is."""

    sigma: float = 4.0
    align_corners: bool = False
    padding: BlurPadding = "reflect"


#: PatchCore's, AnomalyCLIP's and most detectors' convention.
DEFAULT_BLUR = BaselineBlur()


@dataclass
class DetectorOutput:
    """What a detector returns for a batch of images.

    anomaly_map: (B,1,h,w) float32 on the detector's native patch grid, raw scores, higher = anomalous.
    image_score: (B,) image-level anomaly score.
    features: (B,C,h,w) patch features aligned with ``anomaly_map``.
    stride: input pixels between neighbouring grid cells.
    receptive_field: input pixels seen by one grid cell (the side of its square support).
    """

    anomaly_map: torch.Tensor
    image_score: torch.Tensor
    features: torch.Tensor
    stride: int
    receptive_field: int
    #: How this detector's own code turns its map into a pixel map (``BaselineBlur``).
    baseline: BaselineBlur = DEFAULT_BLUR

    def geometry(self) -> dict[str, float | int | bool]:
        """Everything but the tensors: what a copy of the output with other maps must carry over."""
        return {name: getattr(self, name) for name in GEOMETRY}


#: The non-tensor fields of ``DetectorOutput``.
GEOMETRY = ("stride", "receptive_field", "baseline")


class Detector(nn.Module):
    """Base detector: frozen at test time, optionally fitted on normal images.

    Images reach ``forward`` as float tensors in [0, 1], shape (B,3,S,S); each detector applies
    its own normalisation (ImageNet, CLIP, ...).
    """

    #: True when ``fit`` must see normal training images (PatchCore, PaDiM, CFLOW).
    requires_fit: bool = False
    #: True when results from this detector are not meaningful (random weights: ``model.weights=random``,
    #: the tiny CLIP preset).
    smoke_only: bool = False
    #: Pixels between feature cells, and the pixel side of one cell's receptive field (set by each detector).
    stride: int
    receptive_field: int
    #: The detector's baseline convention (``BaselineBlur``): PatchCore/AnomalyCLIP blur with σ=4; MuSc
    #: upsamples with aligned corners and never blurs; the run sets the border from the protocol.
    baseline: BaselineBlur = DEFAULT_BLUR
    #: True when an image is scored against other test images (MuSc): curricula show the detector its
    #: reference images with ``set_reference`` before scoring them.
    transductive: bool = False
    #: For a transductive detector: True when it may only see the images that arrived so far (a
    #: stream), False when it sees the whole category.
    stream_reference: bool = False
    #: The side in pixels of the tiles it scores at native detail (``eval.tiling``), None when it sees
    #: whole images: PGT paints its synthetic anomalies on windows of this side.
    tile_side: int | None = None

    @classmethod
    def reads_train_split(cls, settings: dict[str, Any]) -> bool:
        """Whether a detector built from ``settings`` (its resolved config) is fitted on ``train/``."""
        return cls.requires_fit

    @classmethod
    def check_weights(cls, settings: dict[str, Any]) -> None:
        """Raise ``WeightsError`` (naming the file and how to get it) when a weight file a detector
        built from ``settings`` would read is missing; called before any model is built."""

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        """Raise ``AnorefineError`` when settings that each pass their schema cannot go together (e.g. an
        image size the backbone's patches do not divide); called before any model is built."""

    @classmethod
    def check_files(cls, settings: dict[str, Any]) -> None:
        """Raise ``AnorefineError`` when a file ``settings`` name besides the pre-trained weights (a
        trained state, e.g. AnomalyCLIP's prompts) is missing or does not fit the configured detector;
        called before any model is built, also with random weights."""

    @classmethod
    def check_test_split(cls, settings: dict[str, Any], category: str, folders: list[str]) -> None:
        """Raise ``AnorefineError`` when the category's test split (each image's test folder) cannot be
        scored by the configured detector (MuSc: too few images to score against); called before any
        model is built."""

    def setup_category(self, category: str) -> None:
        """Called once per category before its fit and test (WinCLIP puts the name in its prompts)."""

    def fit(self, normal_loader: DataLoader) -> None:
        """Learn the normal model from batches of ``{"image": (B,3,S,S)}``; zero-shot detectors do nothing."""

    def forward(self, images: torch.Tensor) -> DetectorOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def output(
        self, anomaly_map: torch.Tensor, image_score: torch.Tensor, features: torch.Tensor
    ) -> DetectorOutput:
        """A ``DetectorOutput`` carrying this detector's ``stride`` and ``receptive_field``."""
        return DetectorOutput(
            anomaly_map=anomaly_map,
            image_score=image_score,
            features=features,
            stride=self.stride,
            receptive_field=self.receptive_field,
            baseline=self.baseline,
        )

    def encode_reference(self, images: torch.Tensor) -> None:
        """Transductive detectors: the per-image part of ``set_reference`` (MuSc: extract and keep the
        features), timed apart from the scoring against each other (``reference_features``, linear in
        the images, vs ``reference``). The default does nothing; ``set_reference`` must not need it."""

    def set_reference(self, images: torch.Tensor, folders: list[str] | None = None) -> None:
        """Transductive detectors: take (N,3,S,S) as the images to score others against (the others
        ignore it). ``folders``: each image's test folder name (``good`` or a defect type), given
        only to balance reference subsets the way MuSc's official ``divide_num`` does."""


class RunPreparation(ABC):
    """A stage run once per run before any category (``prepare`` in train.yaml), e.g. AnomalyCLIP's
    prompt training; a detector's YAML selects its stage, so the detector never imports it. The stage
    makes one file, which the per-category detectors read through their setting ``sets``."""

    #: The model setting the stage's file is handed to (``model.<sets>``).
    sets: ClassVar[str]

    @abstractmethod
    def prepare(
        self, model: dict[str, Any], dataset: DatasetSource, num_workers: int, run_dir: Path,
        make_trainer: Callable[..., L.Trainer],
    ) -> Path:  # fmt: skip
        """Do the stage's work for the evaluated ``dataset`` with the detector ``model`` (its resolved
        settings); returns the file for ``model.<sets>``."""
