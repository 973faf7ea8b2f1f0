"""Pixel novelty: pixel-level evidence of abnormality that knows what normal looks like (F2PAD, ARD).

Raw image edges are everywhere on textures and say nothing about defects. Instead, each pixel's
fine CNN feature (early layers: small receptive field, near pixel resolution) is compared with the
fine features of the pixels the detector itself scores as normal in the same image (cells below a
quantile of its coarse map). The distance to the nearest such reference is the pixel's *novelty*:
low on normal texture, even right next to a defect, high on the defect itself. No training; the
normal reference comes from the detector's feature-level verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anorefine.detectors.backbones import build_feature_extractor
from anorefine.detectors.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from anorefine.weights import resolve_weights_dir


def drop_unused_blocks(extractor: nn.Module) -> nn.Module:
    """Cut a timm EfficientNet feature model after its last returned block (timm runs them all).

    Other timm feature models already stop at their last returned layer and are left as they are.
    """
    model: Any = extractor.feature_extractor
    stages = getattr(model, "_stage_out_idx", None)
    if stages and hasattr(model, "blocks"):
        model.blocks = model.blocks[: max(stages)]
    return extractor


def fine_features(extractor: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [0,1] -> (B,C,h,w) every layer of ``extractor`` concatenated on its finest grid."""
    layers = list(extractor(normalize(images, IMAGENET_MEAN, IMAGENET_STD)).values())
    size = layers[0].shape[-2:]
    return torch.cat([F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in layers], 1)


#: Query pixels per block of ``nearest_distance``: a block's distances to every reference stay in
#: cache instead of one (pixels x references) matrix per image (torch.cdist then amin).
DISTANCE_BLOCK = 1024


def nearest_distance(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(N,) Euclidean distance of each of (N,C) ``queries`` to the nearest of (R,C) ``references``:
    cdist's matrix-product form (|q|² + |r|² - 2 q·r) in blocks of queries, minimised before the root."""
    reference_norms = references.pow(2).sum(1)
    scaled = -2.0 * references.T
    nearest = torch.cat(
        [torch.addmm(reference_norms, block, scaled).amin(1) for block in queries.split(DISTANCE_BLOCK)]
    )
    return (nearest + queries.pow(2).sum(1)).clamp_min(0.0).sqrt()


def nearest_reference_distance(
    features: torch.Tensor, normal: torch.Tensor, reference_size: int, generator: torch.Generator
) -> torch.Tensor:
    """Per pixel of (C,h,w) ``features``: distance to the nearest of ``reference_size`` normal pixels."""
    flat = features.flatten(1).T
    candidates = flat[normal.flatten()]
    if candidates.shape[0] == 0:
        candidates = flat
    pick = torch.randperm(candidates.shape[0], generator=generator, device="cpu")[:reference_size]
    reference = candidates[pick.to(candidates.device)]
    return nearest_distance(flat, reference).view(features.shape[1:])


class NoveltyGuidance(nn.Module):
    """Pixel novelty (B,1,H,W): fine-feature distance to the image's own normal-scored pixels.

    ``reference_quantile``: cells whose coarse score is at most this quantile of the image's cells
    provide the reference; ``reference_size`` of their pixels are drawn (seeded, so deterministic).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: Sequence[str] = ("blocks.0",),
        reference_quantile: float = 0.5,
        reference_size: int = 1024,
        weights_dir: str | None = None,
        pretrained: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.extractor = drop_unused_blocks(
            build_feature_extractor(backbone, list(layers), resolve_weights_dir(weights_dir), pretrained)
        )
        self.reference_quantile = reference_quantile
        self.reference_size = reference_size
        self.seed = seed

    def train(self, mode: bool = True) -> NoveltyGuidance:
        """Always in eval mode: a frozen backbone (a trainer's ``train()`` must not switch its norms)."""
        return super().train(False)

    def forward(self, images: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = fine_features(self.extractor, images)
            grid = features.shape[-2:]
            scores = F.interpolate(coarse, size=grid, mode="bilinear", align_corners=False).flatten(1)
            normal = scores <= scores.quantile(self.reference_quantile, dim=1, keepdim=True)
            generator = torch.Generator().manual_seed(self.seed)
            novelty = torch.stack(
                [
                    nearest_reference_distance(f, n, self.reference_size, generator)
                    for f, n in zip(features, normal.view(-1, *grid), strict=True)
                ]
            )
            return F.interpolate(
                novelty[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
            )
