"""The Lightning side of PGT: the frozen detector's pass, the synthetic training pairs, the ARD's loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.refiners.base import TrainableRefiner
from anorefine.shapes import spatial_size


class ImagesOnly(Dataset):
    """A view of a test set that exposes images only: training code cannot reach masks or labels."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # a map-style dataset has a length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.dataset[index]["image"]}


class DetectorPass(L.LightningModule):
    """Runs the frozen detector under a Trainer's ``predict`` (same device and precision as the test)."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        output = self.detector(batch["image"])
        return {
            "image": batch["image"].cpu(),
            "anomaly_map": output.anomaly_map.float().cpu(),
            "image_score": output.image_score.float().cpu(),
            "features": output.features.float().cpu(),
            **output.geometry(),
        }


def collate_outputs(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate ``DetectorPass`` batches (tensors along the batch, ints taken from the first)."""
    return {
        key: torch.cat([b[key] for b in batches]) if torch.is_tensor(batches[0][key]) else batches[0][key]
        for key in batches[0]
    }


class SyntheticPairs(Dataset):
    """Cached training pairs: image, exact mask and the detector's coarse map and features.

    ``crop_cells`` > 0 cuts random crops aligned with the detector's grid (that many cells a side),
    which keeps the decoder's training cheap on a CPU; it is fully convolutional, so tests use
    whole images.
    """

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        maps: torch.Tensor,
        features: torch.Tensor,
        cues: torch.Tensor | None = None,
        crop_cells: int = 0,
    ) -> None:
        self.images, self.masks, self.maps, self.features = images, masks, maps, features
        self.cues = cues  # the ARD's pixel cues of each whole image, cropped with it
        self.crop_cells = crop_cells

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask, amap, feats = (
            self.images[index],
            self.masks[index],
            self.maps[index],
            self.features[index],
        )
        pixels = image if self.cues is None else torch.cat([image, self.cues[index]])
        grid_h, grid_w = amap.shape[-2:]
        cells = self.crop_cells
        if 0 < cells < min(grid_h, grid_w):
            size_h, size_w = image.shape[-2:]
            gy = int(torch.randint(0, grid_h - cells + 1, ()))
            gx = int(torch.randint(0, grid_w - cells + 1, ()))
            y0, y1 = round(gy * size_h / grid_h), round((gy + cells) * size_h / grid_h)
            x0, x1 = round(gx * size_w / grid_w), round((gx + cells) * size_w / grid_w)
            pixels, mask = pixels[:, y0:y1, x0:x1], mask[:, y0:y1, x0:x1]
            amap, feats = (
                amap[:, gy : gy + cells, gx : gx + cells],
                feats[:, gy : gy + cells, gx : gx + cells],
            )
        item = {"image": pixels[:3], "mask": mask, "anomaly_map": amap, "features": feats}
        if self.cues is not None:
            item["cues"] = pixels[3:]
        return item


def focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Binary focal loss on probabilities and soft targets (mean over pixels)."""
    prob = prob.clamp(1e-6, 1 - 1e-6)
    p_true = prob * target + (1 - prob) * (1 - target)
    bce = F.binary_cross_entropy(prob, target, reduction="none")
    return ((1 - p_true) ** gamma * bce).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice over the whole batch (so anomaly-free samples do not dominate)."""
    intersection = (prob * target).sum()
    return 1 - (2 * intersection + smooth) / (prob.sum() + target.sum() + smooth)


class ArdTrainingModule(L.LightningModule):
    """Trains the ARD on synthetic pairs with focal + dice on every stage's calibrated estimate."""

    def __init__(
        self,
        refiner: TrainableRefiner,
        geometry: dict[str, Any],
        lr: float,
        weight_decay: float,
        focal_gamma: float,
        dice_weight: float,
    ) -> None:
        super().__init__()
        self.refiner = refiner
        self.geometry = geometry  # the detector's stride, receptive field and baseline convention
        self.lr, self.weight_decay = lr, weight_decay
        self.focal_gamma, self.dice_weight = focal_gamma, dice_weight
        self.losses: list[float] = []

    def on_train_start(self) -> None:
        self.refiner.start_training()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        output = DetectorOutput(
            anomaly_map=batch["anomaly_map"],
            image_score=batch["anomaly_map"].flatten(1).amax(1),
            features=batch["features"],
            **self.geometry,
        )
        loss = batch["mask"].new_zeros(())
        for estimate in self.refiner.estimates(batch["image"], output, batch.get("cues")):
            prob = self.refiner.probability(estimate.float())
            target = F.adaptive_avg_pool2d(batch["mask"], spatial_size(prob))  # soft at coarse stages
            loss = (
                loss + focal_loss(prob, target, self.focal_gamma) + self.dice_weight * dice_loss(prob, target)
            )
        self.losses.append(float(loss.detach()))
        self.log("pgt/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.refiner.trainable_parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
