"""PatchCore behind the detector contract, on anomalib's PatchcoreModel."""

from __future__ import annotations

from typing import Any

import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel
from torch.utils.data import DataLoader

from anorefine.detectors.cnn import CnnDetector
from anorefine.detectors.coreset import sample_coreset
from anorefine.detectors.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize


class PatchCoreDetector(CnnDetector):
    """Memory bank of normal patch features; patch score = distance to the nearest bank entry.

    Reuses anomalib's feature pooling, embedding, coreset sampling, k-NN and image-score reweighting;
    only the output differs: the raw map on the feature grid, as the contract asks.
    """

    default_strides = (8, 16)

    def __init__(
        self,
        coreset_ratio: float = 0.1,
        coreset_projection_dim: int = 128,
        num_neighbors: int = 9,
        **backbone: Any,
    ) -> None:
        """``backbone``: the ``CnnDetector`` settings (backbone, layers, image_size, ...)."""
        super().__init__(**backbone)
        self.coreset_ratio = coreset_ratio
        self.coreset_projection_dim = coreset_projection_dim
        self.model = PatchcoreModel(
            layers=self.layers, backbone=self.backbone_name, pre_trained=False, num_neighbors=num_neighbors
        )
        self.model.feature_extractor = self.build_extractor()

    def cell_support(self, reductions: list[int]) -> int:
        """The 3x3 average pool over cells ``stride`` pixels apart."""
        return 3 * reductions[0]

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

    def is_fitted(self) -> bool:
        return self.model.memory_bank.numel() > 0

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embedding = self._embed(images)
        batch, _, height, width = embedding.shape
        flat = self.model.reshape_embedding(embedding)
        patch_scores, locations = self.model.nearest_neighbors(flat, n_neighbors=1)
        patch_scores = patch_scores.reshape(batch, -1)
        image_score = self.model.compute_anomaly_score(patch_scores, locations.reshape(batch, -1), flat)
        return patch_scores.reshape(batch, 1, height, width), image_score, embedding
