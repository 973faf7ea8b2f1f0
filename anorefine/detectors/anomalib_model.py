"""Any anomalib image model behind the detector contract: ``model=anomalib model.architecture=Stfpm``.

The model is anomalib's own class (``anomalib.models.<architecture>``), built with ``model.settings``
passed through to its constructor, trained by its own ``training_step`` in a Lightning Trainer
(``epochs`` / ``max_steps``; the model's ``trainer_arguments`` win, so a memory bank makes one pass)
and scored by its own torch model. What anorefine sets around it:

- pre-processing: the model's default pre-processor with its geometric steps (``Resize``,
  ``CenterCrop``) replaced by one ``Resize`` to ``image_size``, a no-op on the dataset's images (they
  arrive at that size), so the map covers the whole image; its photometric steps (``Normalize``) stay;
- no post-processor, evaluator or visualizer: the raw ``anomaly_map`` and ``pred_score`` are scored
  (anomalib's post-processor would min-max normalise them with thresholds from validation data);
- the map, brought to the input size if the model returns another one, is averaged over cells of
  ``stride`` pixels: the contract's patch grid, which the refiners upsample from (``stride=1`` keeps
  the model's own map; the baseline upsamples bilinearly, without blur, since anomalib blurs already);
- features for the ARD: the model's own backbone output (the first ``TimmFeatureExtractor``, else a
  ``feature_extractor`` / ``encoder`` / ``teacher_model`` module), captured by a forward hook during
  the model's own pass, finest map resized to the grid; a model without one (DRAEM) gets
  ``fallback_backbone``'s stride-8 stage (``feature_origin`` says which);
- weights: timm's and torchvision's pretrained downloads are served from the weights dir, or drawn
  at random from ``weights_seed`` with ``weights=random`` (``offline_hubs``).
"""

from __future__ import annotations

import inspect
import urllib.error
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, cast

import lightning as L
import torch
import torch.nn.functional as F
from anomalib import models
from anomalib.data import ImageBatch
from anomalib.models import image
from anomalib.models.components import AnomalibModule
from anomalib.models.components.feature_extractors import TimmFeatureExtractor
from anomalib.pre_processing import PreProcessor
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import CenterCrop, Compose, InterpolationMode, Resize

from anorefine.detectors.backbones import backbone_weight_file, detector_feature_extractor
from anorefine.detectors.base import BaselineBlur, Detector, DetectorOutput
from anorefine.detectors.cnn import stage_layers
from anorefine.detectors.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from anorefine.detectors.offline_hubs import HubMode, offline_hubs
from anorefine.errors import AnorefineError, WeightsError
from anorefine.weights import PRETRAINED, RANDOM, WeightsSource, resolve_weights_dir, seeded_weights

#: ``model.feature_source``: the model's own backbone where it has one (else the fallback), or the
#: fallback backbone always.
FeatureSource = Literal["auto", "fallback"]
#: anomalib image models that score whole images only: no map to refine.
IMAGE_LEVEL_ONLY = ("Dfkde", "Ganomaly", "VlmAd")
#: The constructor arguments of every anomalib model that anorefine sets itself.
COMPONENTS = ("pre_processor", "post_processor", "evaluator", "visualizer")
#: Names of a model's backbone module when it has no ``TimmFeatureExtractor``.
BACKBONE_NAMES = ("feature_extractor", "encoder", "teacher_model")
#: Lightning's warnings on a Trainer run without logger (anomalib's ``self.log`` calls) or optimizer
#: (a memory bank's one pass).
TRAINER_WARNINGS = (
    r"You called `self\.log\(",
    r"Trying to infer the `batch_size`",
    r"`LightningModule\.configure_optimizers` returned `None`",
)
#: The stride of the fallback backbone's stage read as features.
FALLBACK_STRIDE = 8


def image_models() -> tuple[str, ...]:
    """anomalib's image model class names."""
    return tuple(sorted(image.__all__))


def model_class(architecture: str) -> type[AnomalibModule]:
    """The anomalib model class ``architecture`` names; one line listing them when it names none."""
    if architecture not in image_models():
        raise AnorefineError(
            f"model.architecture={architecture} is not an anomalib image model: use one of "
            f"{', '.join(image_models())}"
        )
    return getattr(models, architecture)


def input_transform(module_class: type[AnomalibModule], size: int) -> PreProcessor:
    """The model's default pre-processor, its geometric steps replaced by one Resize to ``size``."""
    transform = module_class.configure_pre_processor().transform
    steps = list(transform.transforms) if isinstance(transform, Compose) else [transform]
    resizes = [step for step in steps if isinstance(step, Resize)]
    resize = Resize(
        (size, size),
        interpolation=resizes[0].interpolation if resizes else InterpolationMode.BILINEAR,
        antialias=True,
    )
    kept = [step for step in steps if step is not None and not isinstance(step, Resize | CenterCrop)]
    return PreProcessor(transform=Compose([resize, *kept]))


def build_module(
    architecture: str, settings: dict[str, Any], image_size: int, mode: HubMode, weights_dir: Path
) -> AnomalibModule:
    """The anomalib model, its pretrained weights as ``mode`` says (``offline_hubs``); no
    post-processor, evaluator or visualizer."""
    module_class = model_class(architecture)
    kwargs = dict(settings)
    parameters = inspect.signature(module_class).parameters
    if mode == RANDOM and "pre_trained" in parameters:
        kwargs.setdefault("pre_trained", False)
    if "input_shape" in parameters:  # GLASS sizes its output map by it, not by its pre-processor
        kwargs.setdefault("input_shape", (image_size, image_size))
    try:
        with offline_hubs(mode, weights_dir):
            return module_class(
                pre_processor=input_transform(module_class, image_size),
                post_processor=False,
                evaluator=False,
                visualizer=False,
                **kwargs,
            )
    except urllib.error.URLError as error:
        raise WeightsError(
            f"model.architecture={architecture} tried to download something while being built ({error}) and "
            "there is no internet here: point its path setting in model.settings at a local copy "
            "(e.g. Draem: model.settings.dtd_dir=DIR)"
        ) from None
    except ValueError as error:  # anomalib's own check of its settings (e.g. an unsupported backbone)
        raise AnorefineError(
            f"model.architecture={architecture} refused model.settings={settings}: {error}"
        ) from None


def find_backbone(model: nn.Module) -> str | None:
    """The path of the model's backbone: its first ``TimmFeatureExtractor``, else the first module
    named in ``BACKBONE_NAMES``; None when it has neither."""
    named = list(model.named_modules())
    found = next((n for n, m in named if isinstance(m, TimmFeatureExtractor)), None)
    if found is None:
        found = next((n for n, _ in named if n.rsplit(".", 1)[-1] in BACKBONE_NAMES), None)
    return found


def as_feature_map(output: Any) -> torch.Tensor | None:
    """The finest (B,C,h,w) map in a backbone's output (a tensor, or a list, tuple or dict of them);
    ViT tokens (B,N,C) are laid onto their square patch grid, prefix tokens dropped. None: no map."""
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, list | tuple):
        maps = [m for m in (as_feature_map(item) for item in output) if m is not None]
        return max(maps, key=lambda m: m.shape[-2] * m.shape[-1], default=None)
    if not isinstance(output, torch.Tensor):
        return None
    if output.dim() == 4:
        return output
    if output.dim() == 3:  # (B, N, C) tokens
        side = int(output.shape[1] ** 0.5)
        if side == 0:
            return None
        patches = output[:, output.shape[1] - side * side :]
        return patches.transpose(1, 2).reshape(output.shape[0], output.shape[2], side, side)
    return None


def to_grid(values: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B,C,h,w) -> (B,C,*grid): averaged over cells when finer, bilinear when coarser."""
    if tuple(values.shape[-2:]) == grid:
        return values
    if values.shape[-2] >= grid[0] and values.shape[-1] >= grid[1]:
        return F.adaptive_avg_pool2d(values, grid)
    return F.interpolate(values, size=grid, mode="bilinear", align_corners=False)


def image_batch(items: list[dict[str, torch.Tensor]]) -> ImageBatch:
    """Normal images ``{"image": (3,S,S)}`` -> anomalib's ImageBatch (label 0, empty masks)."""
    images = torch.stack([item["image"] for item in items]).float()
    count, _, height, width = images.shape
    return ImageBatch(
        image=images,
        gt_label=torch.zeros(count, dtype=torch.long),
        gt_mask=torch.zeros(count, height, width, dtype=torch.bool),
    )


class NormalImages(L.LightningDataModule):
    """The normal train images as anomalib batches; a datamodule, since some models read their
    training data through ``trainer.datamodule`` (Dinomaly's schedule, CFA's centroids)."""

    def __init__(self, loader: DataLoader) -> None:
        super().__init__()
        self.loader = loader

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.loader.dataset,
            batch_size=self.loader.batch_size,
            shuffle=True,
            num_workers=self.loader.num_workers,
            collate_fn=image_batch,
        )


class AnomalibDetector(Detector):
    """An anomalib image model, trained and scored by anomalib's own code (module docstring)."""

    requires_fit = True
    #: anomalib's maps are blurred by the model already: the baseline only upsamples the grid.
    baseline = BaselineBlur(sigma=0.0)

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        architecture = settings["architecture"]
        model_class(architecture)
        label = settings.get("name")
        if label in image_models() and label != architecture:
            raise AnorefineError(
                f"model.name={label} only labels the run; the model is model.architecture={architecture}: "
                f"set model.architecture={label}"
            )
        if architecture in IMAGE_LEVEL_ONLY:
            raise AnorefineError(
                f"model.architecture={architecture} scores whole images only (no anomaly map to refine): "
                "use a model with maps, e.g. Padim, Patchcore, Stfpm"
            )
        accepted = set(inspect.signature(model_class(architecture)).parameters) - {"self", *COMPONENTS}
        for key in settings.get("settings") or {}:
            if key not in accepted:
                raise AnorefineError(
                    f"model.settings.{key} is not a setting of anomalib's {architecture} "
                    f"(its settings: {', '.join(sorted(accepted))})"
                )
        if not 1 <= settings["stride"] <= settings["image_size"]:
            raise AnorefineError(
                f"model.stride={settings['stride']}: use 1 (the model's own map) up to model.image_size"
            )

    @classmethod
    def check_weights(cls, settings: dict[str, Any]) -> None:
        """Builds the model once with random weights, looking up every pretrained file it would read."""
        weights_dir = resolve_weights_dir(settings.get("weights_dir"))
        with torch.random.fork_rng(devices=[]):
            module = build_module(
                settings["architecture"], settings.get("settings") or {}, settings["image_size"], "check",
                weights_dir,
            )  # fmt: skip
        if settings["feature_source"] == "fallback" or find_backbone(module.model) is None:
            backbone_weight_file(settings["fallback_backbone"], weights_dir)

    def __init__(
        self,
        architecture: str = "Padim",
        settings: dict[str, Any] | None = None,
        image_size: int = 256,
        epochs: int = 5,
        max_steps: int = -1,
        stride: int = 8,
        receptive_field: int | None = None,
        feature_source: FeatureSource = "auto",
        fallback_backbone: str = "efficientnet_lite0",
        weights_dir: str | None = None,
        weights: WeightsSource = PRETRAINED,
        weights_seed: int = 0,
    ) -> None:
        """``architecture``: an anomalib image model class; ``settings``: its constructor's settings;
        ``epochs`` / ``max_steps``: training length (-1: no step limit) unless the model fixes its
        own; ``stride``: pixels per cell of the grid the map is averaged onto; ``receptive_field``:
        pixels one cell sees (None: two strides); ``weights=random``: every pretrained backbone drawn
        from ``weights_seed`` (smoke-only)."""
        super().__init__()
        self.architecture, self.image_size = architecture, image_size
        self.epochs, self.max_steps = epochs, max_steps
        self.stride = stride
        self.receptive_field = int(receptive_field or 2 * stride)
        self.smoke_only = weights == RANDOM
        weights_dir_path = resolve_weights_dir(weights_dir)
        random_weights = seeded_weights(weights_seed) if weights == RANDOM else nullcontext()
        with random_weights:
            self.module = build_module(architecture, settings or {}, image_size, weights, weights_dir_path)
        #: the backbone's path in the model (a name, so that its weights are not registered twice)
        self.backbone_name = find_backbone(self.module.model) if feature_source == "auto" else None
        self.fallback = None
        if self.backbone_name is None:
            layers = stage_layers(fallback_backbone, (FALLBACK_STRIDE,))
            self.fallback = detector_feature_extractor(
                fallback_backbone, layers, weights_dir_path, weights, weights_seed
            )
        self.fallback_backbone = fallback_backbone
        self.fitted: torch.Tensor
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def backbone(self) -> nn.Module | None:
        """The model's backbone module whose output the ARD reads (None: the fallback's)."""
        return None if self.backbone_name is None else self.module.model.get_submodule(self.backbone_name)

    @property
    def input_steps(self) -> Compose:
        """The pre-processing ``build_module`` gave the model (``input_transform``)."""
        return cast(Compose, cast(PreProcessor, self.module.pre_processor).transform)

    @property
    def feature_origin(self) -> str:
        """Where the ARD's features come from: the model's backbone module, or the fallback backbone."""
        if self.backbone is not None:
            return f"model backbone ({self.backbone_name}: {type(self.backbone).__name__})"
        return f"fallback backbone ({self.fallback_backbone}, stride {FALLBACK_STRIDE})"

    def trainer_settings(self, device: torch.device) -> dict[str, Any]:
        """Lightning Trainer arguments: our length, the model's own arguments over it, on ``device``."""
        settings = {"max_epochs": self.epochs, "max_steps": self.max_steps, **self.module.trainer_arguments}
        settings.pop("devices", None)
        cuda = device.type == "cuda"
        return {
            **settings,
            "accelerator": "gpu" if cuda else "cpu",
            "devices": [device.index or 0] if cuda else 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
        }

    def fit(self, normal_loader: DataLoader) -> None:
        """Train the model with its own training step on the normal images (a Lightning Trainer)."""
        device = self.fitted.device
        trainer = L.Trainer(**self.trainer_settings(device))
        self.module.train()  # Lightning keeps the mode it finds; the run builds detectors in eval mode
        with warnings.catch_warnings():  # by design here: see TRAINER_WARNINGS
            warnings.simplefilter("ignore", PossibleUserWarning)
            for message in TRAINER_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            trainer.fit(self.module, datamodule=NormalImages(normal_loader))
        self.module.to(device).eval()  # Lightning's teardown leaves the module on the CPU
        self.fitted.fill_(True)

    def grid(self) -> tuple[int, int]:
        """The contract's patch grid: ``image_size / stride`` cells per side."""
        side = max(1, round(self.image_size / self.stride))
        return side, side

    def features(self, images: torch.Tensor, captured: list[Any]) -> torch.Tensor:
        """(B,C,*grid) features: the backbone output captured during the model's pass, or the fallback's."""
        if self.fallback is not None:
            output = self.fallback(normalize(images, IMAGENET_MEAN, IMAGENET_STD))
        elif captured:
            output = captured[0]
        else:
            output = None
        feature_map = as_feature_map(output)
        if feature_map is None:
            raise AnorefineError(
                f"model.architecture={self.architecture}: its {self.backbone_name} gave no feature map "
                "during scoring: set model.feature_source=fallback"
            )
        return to_grid(feature_map.float(), self.grid())

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        if not bool(self.fitted):
            raise RuntimeError(f"{self.architecture} is not trained yet: call fit() on normal images first")
        images = images.float()
        captured: list[Any] = []
        backbone = self.backbone
        hook = (
            backbone.register_forward_hook(lambda module, inputs, output: captured.append(output))
            if backbone is not None
            else None
        )
        try:
            with torch.no_grad():
                prediction = self.module.model(self.input_steps(images))
        finally:
            if hook is not None:
                hook.remove()
        if prediction.anomaly_map is None:
            raise AnorefineError(f"model.architecture={self.architecture} returned no anomaly map")
        anomaly_map = prediction.anomaly_map.float()
        anomaly_map = anomaly_map.unsqueeze(1) if anomaly_map.dim() == 3 else anomaly_map
        if anomaly_map.shape[-2:] != images.shape[-2:]:
            anomaly_map = F.interpolate(
                anomaly_map, size=images.shape[-2:], mode="bilinear", align_corners=False
            )
        score = prediction.pred_score
        score = anomaly_map.flatten(1).amax(1) if score is None else score.float().reshape(len(images))
        with torch.no_grad():
            features = self.features(images, captured)
        return self.output(to_grid(anomaly_map, self.grid()), score, features)
