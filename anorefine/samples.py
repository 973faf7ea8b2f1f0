"""A bounded keeper of test images for the visual report: the best and worst refined maps.

The task feeds it every test batch after both maps exist. Each anomalous image with a mask is
ranked by the pixel AP of its refined map within the image; the keeper holds only the
``per_side`` best and ``per_side`` worst (image, mask, base map, refined map) on the CPU, so its
memory does not grow with the test set. It reads masks for evaluation only, like the metrics.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score

#: Images kept per side (best, worst) per category.
SAMPLES_PER_SIDE = 3


@dataclass(frozen=True)
class Sample:
    """One test image with its ground truth and both maps, and the per-image AP of each map."""

    index: int
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool
    base: np.ndarray  # (H, W) float32
    refined: np.ndarray  # (H, W) float32
    base_ap: float
    refined_ap: float


def image_ap(anomaly_map: torch.Tensor, mask: torch.Tensor) -> float:
    """Pixel AP of one map against one mask (both (H, W))."""
    return float(average_precision_score(mask.flatten().cpu().numpy(), anomaly_map.flatten().cpu().numpy()))


def to_sample(
    index: int,
    image: torch.Tensor,
    mask: torch.Tensor,
    base: torch.Tensor,
    refined: torch.Tensor,
    refined_ap: float,
) -> Sample:
    """A CPU copy of one image (3,H,W in [0,1]), its (H,W) mask and maps, with both per-image APs."""
    base = base.reshape(mask.shape).detach().float()
    return Sample(
        index=index,
        image=(image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy(),
        mask=mask.cpu().numpy(),
        base=base.cpu().numpy(),
        refined=refined.reshape(mask.shape).detach().float().cpu().numpy(),
        base_ap=image_ap(base, mask),
        refined_ap=refined_ap,
    )


class SampleKeeper:
    """Keeps the ``per_side`` best and worst anomalous test images by refined per-image pixel AP."""

    def __init__(self, per_side: int = SAMPLES_PER_SIDE) -> None:
        self.per_side = per_side
        self._best: list[tuple[float, int, Sample]] = []  # min-heap on AP: the root is evicted first
        self._worst: list[tuple[float, int, Sample]] = []  # min-heap on -AP
        self._counter = itertools.count()

    def update(self, batch: dict[str, Any], base: torch.Tensor, refined: torch.Tensor) -> None:
        """Offer every anomalous image of a test batch that has a mask."""
        keep = (torch.as_tensor(batch["label"]) == 1) & torch.as_tensor(batch["has_mask"]).bool()
        for i in keep.nonzero().flatten().tolist():
            mask = batch["mask"][i].reshape(batch["mask"].shape[-2:]) > 0.5
            if not bool(mask.any()):
                continue
            refined_ap = image_ap(refined[i].reshape(mask.shape), mask)
            tie = next(self._counter)
            if not (
                self._enters(self._best, (refined_ap, tie)) or self._enters(self._worst, (-refined_ap, tie))
            ):
                continue
            index = int(batch["index"][i]) if "index" in batch else tie
            sample = to_sample(index, batch["image"][i], mask, base[i], refined[i], refined_ap)
            self._offer(self._best, (refined_ap, tie, sample))
            self._offer(self._worst, (-refined_ap, tie, sample))

    def _enters(self, heap: list[tuple[float, int, Sample]], key: tuple[float, int]) -> bool:
        return len(heap) < self.per_side or key > heap[0][:2]

    def _offer(self, heap: list[tuple[float, int, Sample]], item: tuple[float, int, Sample]) -> None:
        if len(heap) < self.per_side:
            heapq.heappush(heap, item)
        elif self._enters(heap, item[:2]):
            heapq.heapreplace(heap, item)

    @property
    def best(self) -> list[Sample]:
        """The kept best images, best first."""
        return [sample for _, _, sample in sorted(self._best, key=lambda item: item[:2], reverse=True)]

    @property
    def worst(self) -> list[Sample]:
        """The kept worst images, worst first (none that is also among the best)."""
        best = {id(sample) for sample in self.best}
        ordered = sorted(self._worst, key=lambda item: item[:2], reverse=True)
        return [sample for _, _, sample in ordered if id(sample) not in best]
