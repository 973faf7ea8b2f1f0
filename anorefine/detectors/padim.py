"""PaDiM behind the detector contract, on anomalib's PadimModel."""

from __future__ import annotations

from typing import Any

import torch
from anomalib.models.image.padim.anomaly_map import AnomalyMapGenerator
from anomalib.models.image.padim.torch_model import PadimModel
from torch.utils.data import DataLoader

from anorefine.detectors.cnn import CnnDetector
from anorefine.detectors.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from anorefine.errors import DataError


class PadimDetector(CnnDetector):
    """One Gaussian of normal patch embeddings per grid cell; cell score = Mahalanobis distance.

    Reuses anomalib's embedding (layers concatenated on the finest grid, random channel subset) and
    distance; the map is returned raw on the finest grid. The Gaussians are fitted here, vectorised,
    with the paper's covariance regulariser ``covariance_eps`` I (anomalib adds 1e-5 I, which leaves
    the covariance of a few dozen images in 100 dimensions nearly singular).
    """

    default_strides = (4, 8, 16)

    def __init__(self, n_features: int = 100, covariance_eps: float = 0.01, **backbone: Any) -> None:
        """``backbone``: the ``CnnDetector`` settings (backbone, layers, image_size, ...)."""
        super().__init__(**backbone)
        self.covariance_eps = covariance_eps
        self.model = PadimModel(
            backbone=self.backbone_name, layers=self.layers, pre_trained=False, n_features=n_features
        )
        self.model.feature_extractor = self.build_extractor()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) in [0,1] -> (B,n_features,h,w) embedding; differentiable when grad is enabled."""
        features = self.model.feature_extractor.feature_extractor(
            normalize(images, IMAGENET_MEAN, IMAGENET_STD)
        )
        named = dict(zip(self.model.layers, features, strict=True))
        return self.model.generate_embedding(named)

    def score_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B,C,h,w) embedding -> (B,1,h,w) Mahalanobis distance to each cell's Gaussian (differentiable)."""
        gaussian = self.model.gaussian
        return AnomalyMapGenerator.compute_distance(embedding, [gaussian.mean, gaussian.inv_covariance])

    def fit(self, normal_loader: DataLoader) -> None:
        """Fit the per-cell Gaussians (mean, inverse of covariance + eps I) to every normal embedding."""
        device = self.model.idx.device
        with torch.no_grad():
            embeddings = torch.cat([self.embed(batch["image"].to(device).float()) for batch in normal_loader])
        if embeddings.shape[0] < 2:
            raise DataError("PaDiM needs at least 2 normal train images to estimate covariances: add images")
        vectors = embeddings.flatten(2)  # (N, C, h*w)
        mean = vectors.mean(0)
        centred = vectors - mean
        covariance = torch.einsum("ncp,ndp->pcd", centred, centred) / (vectors.shape[0] - 1)
        identity = torch.eye(vectors.shape[1], device=device)
        self.model.gaussian.mean = mean
        self.model.gaussian.inv_covariance = torch.linalg.inv(covariance + self.covariance_eps * identity)

    def is_fitted(self) -> bool:
        return self.model.gaussian.mean.numel() > 0

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embedding = self.embed(images)
        anomaly_map = self.score_embedding(embedding)
        return anomaly_map, anomaly_map.flatten(1).amax(1), embedding
