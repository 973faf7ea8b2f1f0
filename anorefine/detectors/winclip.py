"""WinCLIP behind the detector contract, on anomalib's WinClipModel with a configurable open_clip backbone."""

from __future__ import annotations

from typing import Any

import open_clip
import torch
from anomalib.models.image.winclip.torch_model import TEMPERATURE, WinClipModel
from anomalib.models.image.winclip.utils import class_scores, make_masks
from torch import nn
from torch.utils.data import DataLoader

from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.detectors.clip_models import CLIP_MEAN, CLIP_STD, TINY, ClipCheckpoint
from anorefine.detectors.normalization import normalize
from anorefine.errors import DataError
from anorefine.shapes import spatial_size
from anorefine.weights import PRETRAINED, RANDOM, WeightsSource


class BackboneWinClipModel(WinClipModel):
    """anomalib's WinClipModel on a given open_clip model.

    anomalib's constructor downloads its hard-coded ViT-B-16-plus-240; this one takes the CLIP instead
    and sets up the same state (buffers, masks, temperature). Every other method is anomalib's.
    """

    def __init__(self, clip: open_clip.CLIP, scales: tuple[int, ...] = (2, 3)) -> None:
        nn.Module.__init__(self)
        self.temperature = TEMPERATURE
        self.class_name: str | None = None
        self.reference_images: torch.Tensor | None = None
        self.scales = tuple(scales)
        self.apply_transform = False
        self.k_shot = 0
        self.clip = clip
        self.clip.visual.output_tokens = True
        self.grid_size = self.clip.visual.grid_size
        self.register_buffer_list(
            "masks", [make_masks(self.grid_size, s, 1) for s in self.scales], persistent=False
        )
        self.register_buffer("_text_embeddings", torch.empty(0))
        self.register_buffer_list("_visual_embeddings", [torch.empty(0) for _ in self.scales])
        self.register_buffer("_patch_embeddings", torch.empty(0))


class WinClipDetector(ClipCheckpoint, Detector):
    """Zero-/few-shot WinCLIP: window-level CLIP scores against state-word prompts, harmonically aggregated.

    Zero-shot scores the image and its 2×2 / 3×3 patch windows against "normal"/"anomalous" prompt
    ensembles of the class name; with ``k_shot`` > 0, ``fit`` stores k normal reference images and
    the map also averages in visual association scores (anomalib's few-shot WinCLIP+).
    """

    @classmethod
    def reads_train_split(cls, settings: dict[str, Any]) -> bool:
        return int(settings.get("k_shot", 0)) > 0  # few-shot reads k normal images

    def __init__(
        self,
        clip: str = "ViT-B-16-plus-240",
        pretrained: str = "laion400m_e31",
        image_size: int = 240,
        k_shot: int = 0,
        scales: tuple[int, ...] = (2, 3),
        class_name: str = "object",
        weights_dir: str | None = None,
        weights: WeightsSource = PRETRAINED,
        weights_seed: int = 0,
    ) -> None:
        """``weights=random`` (or ``clip=tiny``): random CLIP weights from ``weights_seed``, smoke-only."""
        super().__init__()
        backbone = self.build_clip(clip, pretrained, weights_dir, image_size, weights_seed, weights)
        self.model = BackboneWinClipModel(backbone, scales)
        self.image_size = image_size
        self.k_shot = k_shot
        self.requires_fit = k_shot > 0
        self.smoke_only = clip == TINY or weights == RANDOM
        self.stride = int(backbone.visual.patch_size[0])
        # A patch's score mixes every window covering it: up to (2·max scale − 1) patches per side.
        self.receptive_field = (2 * max(scales) - 1) * self.stride
        self.set_category(class_name)

    def set_category(self, name: str) -> None:
        """Build the prompt ensemble for a category name (``metal_nut`` -> "metal nut")."""
        self.model.setup(class_name=name.replace("_", " "))

    def fit(self, normal_loader: DataLoader) -> None:
        """Keep the first ``k_shot`` normal images of the loader as references (anomalib's rule)."""
        if not self.k_shot:
            return
        model: Any = self.model  # anomalib's WinClipModel: its buffers and helpers, untyped
        device = model.masks[0].device
        references: list[torch.Tensor] = []
        collected = 0
        for batch in normal_loader:
            references.append(batch["image"][: self.k_shot - collected])
            collected += len(references[-1])
            if collected == self.k_shot:
                break
        if collected < self.k_shot:
            raise DataError(
                f"model.k_shot={self.k_shot}, but the category has only {collected} normal train images: "
                f"set model.k_shot={collected} or less"
            )
        images = normalize(torch.cat(references).to(device).float(), CLIP_MEAN, CLIP_STD)
        # What WinClipModel.setup does with reference images, without re-encoding the prompt ensemble.
        model.reference_images = images
        model.k_shot = len(images)
        model._collect_visual_embeddings(images)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """anomalib's WinClipModel.forward, stopped before it upsamples the map to the image size."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"WinCLIP expects {self.image_size}² images, got {spatial_size(images)}")
        model = self.model
        image_embeddings, window_embeddings, patch_embeddings = model.encode_image(
            normalize(images.float(), CLIP_MEAN, CLIP_STD)
        )
        image_scores = class_scores(
            image_embeddings, model.text_embeddings, model.temperature, target_class=1
        )
        scores = model._compute_zero_shot_scores(image_scores, window_embeddings)
        if model.k_shot:
            few_shot_scores = model._compute_few_shot_scores(patch_embeddings, window_embeddings)
            scores = (scores + few_shot_scores) / 2
            image_scores = (image_scores + few_shot_scores.amax(dim=(-2, -1))) / 2
        batch = images.shape[0]
        height, width = model.grid_size
        return self.output(
            scores.float().unsqueeze(1),
            image_scores.float(),
            patch_embeddings.float().transpose(1, 2).reshape(batch, -1, height, width),
        )
