"""CFLOW-AD behind the detector contract, on anomalib's CflowModel (decoders, positional encoding)."""

from __future__ import annotations

import logging
from typing import Any

import einops
import torch
import torch.nn.functional as F
from anomalib.models.image.cflow.torch_model import CflowModel
from anomalib.models.image.cflow.utils import get_logp, positional_encoding_2d
from torch.utils.data import DataLoader

from anorefine.detectors.cnn import CnnDetector
from anorefine.detectors.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize

log = logging.getLogger(__name__)


class CflowDetector(CnnDetector):
    """One conditional normalizing flow per layer models normal features given their position.

    Cell score: the negative log-likelihood per feature dimension, averaged over layers after
    upsampling the coarser layers bilinearly onto the finest grid (anomalib instead exponentiates
    against the batch maximum, which makes scores depend on the batch). Features are standardised
    per channel with statistics of the normal images before the flows see them: an affine bijection
    that leaves the model family unchanged but lets a few CPU epochs converge.
    """

    default_strides = (8, 16)

    def __init__(
        self,
        condition_vector: int = 128,
        coupling_blocks: int = 8,
        clamp_alpha: float = 1.9,
        permute_soft: bool = False,
        epochs: int = 5,
        lr: float = 1e-3,
        fiber_batch_size: int = 1024,
        **backbone: Any,
    ) -> None:
        """``backbone``: the ``CnnDetector`` settings (backbone, layers, image_size, ...)."""
        super().__init__(**backbone)
        self.epochs = epochs
        self.lr = lr
        self.model = CflowModel(
            backbone=self.backbone_name,
            layers=self.layers,
            pre_trained=False,
            fiber_batch_size=fiber_batch_size,
            condition_vector=condition_vector,
            coupling_blocks=coupling_blocks,
            clamp_alpha=clamp_alpha,
            permute_soft=permute_soft,
        )
        self.model.encoder = self.build_extractor()
        self.model.encoder.requires_grad_(False)
        self.fitted: torch.Tensor
        self.feature_mean: torch.Tensor
        self.feature_std: torch.Tensor
        self.register_buffer("fitted", torch.tensor(False))
        self.register_buffer("feature_mean", torch.zeros(sum(self.model.pool_dims)))
        self.register_buffer("feature_std", torch.ones(sum(self.model.pool_dims)))

    def _raw_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model.encoder.feature_extractor(normalize(images, IMAGENET_MEAN, IMAGENET_STD)))

    def _standardize(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        means = self.feature_mean.split(self.model.pool_dims)
        stds = self.feature_std.split(self.model.pool_dims)
        return [
            (f - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)
            for f, m, s in zip(features, means, stds, strict=True)
        ]

    def layer_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,S,S) in [0,1] -> standardised features of every layer; differentiable when grad is on."""
        return self._standardize(self._raw_features(images))

    def _conditions(self, feature: torch.Tensor) -> torch.Tensor:
        """Positional encodings (B*h*w, P) matching the rows of ``feature`` (B,C,h,w)."""
        batch, _, height, width = feature.shape
        encoding = positional_encoding_2d(self.model.condition_vector, height, width).to(feature)
        return einops.repeat(encoding, "p h w -> (b h w) p", b=batch)

    def _log_prob(self, layer: int, fibers: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """Log-likelihood per dimension of feature rows (N,C) under layer ``layer``'s flow."""
        p_u, log_jac_det = self.model.decoders[layer](fibers, [conditions])
        return get_logp(fibers.shape[1], p_u, log_jac_det) / fibers.shape[1]

    def score_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Encoder features -> (B,1,h,w) mean NLL per dimension on the finest grid (differentiable)."""
        self.model.decoders.eval()
        size = features[0].shape[-2:]
        maps = []
        for layer, feature in enumerate(features):
            batch, _, height, width = feature.shape
            fibers = einops.rearrange(feature, "b c h w -> (b h w) c")
            conditions = self._conditions(feature)
            chunk = self.model.fiber_batch_size * 4
            nll = torch.cat(
                [
                    -self._log_prob(layer, fibers[i : i + chunk], conditions[i : i + chunk])
                    for i in range(0, fibers.shape[0], chunk)
                ]
            )
            layer_map = nll.reshape(batch, 1, height, width)
            maps.append(F.interpolate(layer_map, size=size, mode="bilinear", align_corners=False))
        return torch.stack(maps).mean(0)

    def fit(self, normal_loader: DataLoader) -> None:
        """Train the flows on normal features: Adam, ``epochs`` passes over shuffled fibers of every layer.

        The encoder is frozen, so its features are computed once; the loss is anomalib's
        ``-logsigmoid(log-likelihood per dimension)``.
        """
        device = self.fitted.device
        with torch.no_grad():
            per_batch = [self._raw_features(batch["image"].to(device).float()) for batch in normal_loader]
        raw = [torch.cat(parts) for parts in zip(*per_batch, strict=True)]
        self.feature_mean.copy_(torch.cat([f.mean((0, 2, 3)) for f in raw]))
        self.feature_std.copy_(torch.cat([f.std((0, 2, 3)) for f in raw]).clamp_min(1e-6))
        layers = self._standardize(raw)
        rows = [
            (einops.rearrange(feature, "b c h w -> (b h w) c"), self._conditions(feature))
            for feature in layers
        ]
        optimizer = torch.optim.Adam(self.model.decoders.parameters(), lr=self.lr)
        self.model.decoders.train()
        size = self.model.fiber_batch_size
        for epoch in range(self.epochs):
            total = 0.0
            for layer, (fibers, conditions) in enumerate(rows):
                order = torch.randperm(fibers.shape[0], device=fibers.device)
                for start in range(0, fibers.shape[0] - size + 1, size):
                    index = order[start : start + size]
                    loss = -F.logsigmoid(self._log_prob(layer, fibers[index], conditions[index])).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss)
            log.info("cflow epoch %d/%d: summed loss %.3f", epoch + 1, self.epochs, total)
        self.model.decoders.eval()
        self.fitted.fill_(True)

    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.layer_features(images)
        anomaly_map = self.score_features(features)
        return anomaly_map, anomaly_map.flatten(1).amax(1), features[0]
