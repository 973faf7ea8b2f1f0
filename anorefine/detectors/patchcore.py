"""PatchCore behind the detector contract, on anomalib's PatchcoreModel."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel
from torch.utils.data import DataLoader

from anorefine.detectors.backbones import DEFAULT_LAYERS, CnnDetectorConfig, build_feature_extractor
from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.detectors.coreset import sample_coreset
from anorefine.detectors.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize


class PatchCoreDetector(Detector):
    """Memory bank of normal patch features; patch score = distance to the nearest bank entry.

    Reuses anomalib's feature pooling, embedding, coreset sampling, k-NN and image-score reweighting;
    only the output differs: the raw map on the feature grid, as the contract asks.
    """

    requires_fit = True

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: list[str] | None = None,
        coreset_ratio: float = 0.1,
        coreset_projection_dim: int = 128,
        num_neighbors: int = 9,
        image_size: int = 256,
        receptive_field: int | None = None,
        weights_dir: str = "weights",
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        layers = list(layers or DEFAULT_LAYERS[backbone])
        self.coreset_ratio = coreset_ratio
        self.coreset_projection_dim = coreset_projection_dim
        self.image_size = image_size
        self.model = PatchcoreModel(
            layers=layers, backbone=backbone, pre_trained=False, num_neighbors=num_neighbors
        )
        self.model.feature_extractor = build_feature_extractor(backbone, layers, weights_dir, pretrained)
        self.stride = int(self.model.feature_extractor.feature_extractor.feature_info.reduction()[0])
        # Support of one cell: the 3x3 average pool over cells `stride` pixels apart.
        self.receptive_field = int(receptive_field or 3 * self.stride)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) in [0,1] -> (B,C,h,w) locally aware patch embedding."""
        with torch.no_grad():
            features = self.model.feature_extractor(normalize(images, IMAGENET_MEAN, IMAGENET_STD))
            pooled = {layer: self.model.feature_pooler(f) for layer, f in features.items()}
            return self.model.generate_embedding(pooled)

    def fit(self, normal_loader: DataLoader) -> None:
        """Store the embeddings of every normal patch, then keep a greedy coreset of them."""
        device = self.model.memory_bank.device
        for batch in normal_loader:
            embedding = self._embed(batch["image"].to(device))
            self.model.embedding_store.append(self.model.reshape_embedding(embedding))
        embeddings = torch.vstack(self.model.embedding_store)
        self.model.embedding_store.clear()
        self.model.memory_bank = sample_coreset(embeddings, self.coreset_ratio, self.coreset_projection_dim)

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        if self.model.memory_bank.numel() == 0:
            raise RuntimeError("PatchCore has an empty memory bank: call fit() on normal images first")
        embedding = self._embed(images.float())
        batch, _, height, width = embedding.shape
        flat = self.model.reshape_embedding(embedding)
        patch_scores, locations = self.model.nearest_neighbors(flat, n_neighbors=1)
        patch_scores = patch_scores.reshape(batch, -1)
        image_score = self.model.compute_anomaly_score(patch_scores, locations.reshape(batch, -1), flat)
        return self.output(
            patch_scores.reshape(batch, 1, height, width),
            image_score,
            embedding,
        )


@dataclass
class PatchCoreConfig(CnnDetectorConfig):
    """Schema of conf/model/patchcore.yaml."""

    _target_: str = "anorefine.detectors.patchcore.PatchCoreDetector"
    name: str = "patchcore"
    coreset_ratio: float = 0.1
    coreset_projection_dim: int = 128
    num_neighbors: int = 9
