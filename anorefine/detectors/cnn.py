"""The base of the CNN-feature detectors (PatchCore, PaDiM, CFLOW-AD): the backbone settings, once.

``layers: null`` picks, for each stride in the detector's ``default_strides``, the backbone stage
that timm's ``feature_info`` reports at that stride (its last module at that reduction), so any timm
CNN works without a hand-written layer table; ``layers: [...]`` names them explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from anomalib.models.components.feature_extractors import TimmFeatureExtractor

from anorefine.detectors.backbones import backbone_weight_file, detector_feature_extractor
from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.errors import AnorefineError
from anorefine.weights import PRETRAINED, RANDOM, WeightsSource, resolve_weights_dir


def stage_layers(backbone: str, strides: Sequence[int]) -> list[str]:
    """The module names of ``backbone``'s feature stages at ``strides`` (timm ``feature_info``).

    The probe model is built with torch's random state saved and restored, so it draws nothing that
    later steps (PaDiM's random channel subset, the coreset) would miss.
    """
    with torch.random.fork_rng(devices=[]):
        probe: Any = timm.create_model(backbone, features_only=True, pretrained=False)
        info = probe.feature_info.get_dicts()
    by_stride = {entry["reduction"]: entry["module"] for entry in info}  # the last module at each stride
    missing = [s for s in strides if s not in by_stride]
    if missing:
        found = ", ".join(f"{m} (stride {r})" for r, m in sorted(by_stride.items()))
        raise AnorefineError(
            f"model.backbone={backbone} has no stage at stride {missing[0]} (stages: {found}): "
            "set model.layers"
        )
    return [by_stride[s] for s in strides]


class CnnDetector(Detector):
    """A detector on the stages of an ImageNet CNN; subclasses build their model, then the extractor."""

    requires_fit = True
    #: The strides of the stages read when ``layers`` is null.
    default_strides: tuple[int, ...] = (8, 16)

    @classmethod
    def check_weights(cls, settings: dict[str, Any]) -> None:
        backbone_weight_file(settings["backbone"], resolve_weights_dir(settings.get("weights_dir")))

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: list[str] | None = None,
        image_size: int = 256,
        receptive_field: int | None = None,
        weights_dir: str | None = None,
        weights: WeightsSource = PRETRAINED,
        weights_seed: int = 0,
    ) -> None:
        """``receptive_field``: input pixels one grid cell sees (None: the detector's own estimate);
        ``weights=random``: the backbone's random weights drawn from ``weights_seed`` (smoke-only)."""
        super().__init__()
        self.backbone_name = backbone
        self.layers = list(layers) if layers else stage_layers(backbone, self.default_strides)
        self.image_size = image_size
        self.receptive_field_setting = receptive_field
        self.weights_dir = resolve_weights_dir(weights_dir)
        self.weights, self.weights_seed = weights, weights_seed
        self.smoke_only = weights == RANDOM

    def build_extractor(self) -> TimmFeatureExtractor:
        """The backbone (offline or random weights); sets ``stride`` (finest layer), ``receptive_field``."""
        extractor = detector_feature_extractor(
            self.backbone_name, self.layers, self.weights_dir, self.weights, self.weights_seed
        )
        reductions = [int(r) for r in extractor.feature_extractor.feature_info.reduction()]
        self.stride = reductions[0]
        self.receptive_field = int(self.receptive_field_setting or self.cell_support(reductions))
        return extractor

    def is_fitted(self) -> bool:
        """True once ``fit`` has built the normal model."""
        raise NotImplementedError

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,3,S,S) float images -> (B,1,h,w) map, (B,) image score, (B,C,h,w) features."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        if not self.is_fitted():
            name = type(self).__name__
            raise RuntimeError(f"{name} has no normal model yet: call fit() on normal images first")
        with torch.no_grad():
            return self.output(*self.score(images.float()))

    def cell_support(self, reductions: list[int]) -> int:
        """Input pixels one cell sees by default: about two strides of the deepest layer (PaDiM, CFLOW)."""
        return 2 * reductions[-1]
