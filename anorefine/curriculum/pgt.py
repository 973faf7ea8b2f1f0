"""PGT, progressive group-wise test-time training of the ARD on the unlabeled test stream.

Per category the test stream is ordered (seeded shuffle, or dataset order) and cut into groups.
Group g is refined by the ARD trained on the groups before it (``mode=progressive``, weights carried
forward); the ARD then trains on group g: its ``pseudo_normal_ratio`` lowest-scored images (by the
frozen detector's image score) receive synthetic anomalies, the detector maps them, and the ARD
learns to turn those maps into the synthetic masks. Ablations: ``mode=offline`` trains one ARD on the
pseudo-normals of the whole stream before testing; ``mode=scratch`` re-initialises it every group;
``contamination=r`` forces a fraction r of truly anomalous images into every pseudo-normal pool
(the only place that reads labels before evaluation). Masks are read only by the task's metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any, Literal, cast, get_args

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from anorefine.curriculum.base import Curriculum, show_reference
from anorefine.curriculum.pgt_training import (
    ArdTrainingModule,
    DetectorPass,
    ImagesOnly,
    SyntheticPairs,
    collate_outputs,
)
from anorefine.data.synthesis import AnomalySynthesizer
from anorefine.detectors.base import GEOMETRY, DetectorOutput
from anorefine.errors import AnorefineError
from anorefine.metrics.names import STAGES
from anorefine.progress import ProgressLog
from anorefine.refiners.base import TrainableRefiner
from anorefine.shapes import spatial_size
from anorefine.task import AnomalyTask

log = logging.getLogger(__name__)
#: progressive: weights carried forward; offline: one ARD on the whole stream; scratch: re-init per group.
Mode = Literal["progressive", "offline", "scratch"]
#: Stream order: seeded shuffle or the dataset's order.
Order = Literal["shuffle", "dataset"]
#: Group 0: refined after training on itself, or left at the base map.
FirstGroup = Literal["self", "base"]
#: Where synthetic anomalies are painted: on the whole pseudo-normal images, or (a tiled detector only)
#: on tile-sized windows cut from them, so defects keep the scale a tile sees and memory the tile's size.
SynthesisOn = Literal["image", "tile"]


def stream_groups(count: int, group_size: int, order: Order, seed: int) -> list[list[int]]:
    """Dataset indices of the stream, ordered and cut into consecutive groups of ``group_size``."""
    if order not in get_args(Order):
        raise AnorefineError(f"curriculum.order={order!r} is unknown: use one of {get_args(Order)}")
    if group_size < 1:
        raise AnorefineError(f"curriculum.group_size={group_size} must be at least 1")
    if order == "shuffle":
        indices = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    else:
        indices = list(range(count))
    return [indices[i : i + group_size] for i in range(0, count, group_size)]


def lowest_scored(scores: torch.Tensor, count: int, exclude: Collection[int] = frozenset()) -> list[int]:
    """Positions of the ``count`` lowest scores, skipping positions in ``exclude``."""
    order = [i for i in torch.argsort(scores, stable=True).tolist() if i not in exclude]
    return order[:count]


def random_windows(images: torch.Tensor, count: int, side: int) -> torch.Tensor:
    """``count`` square windows of ``side`` pixels at random positions, cut in turn from each of
    ``images`` (N,3,H,W): (count,3,side,side), drawn from torch's global generator (seeded by the run)."""
    height, width = spatial_size(images)
    windows = []
    for i in range(count):
        top = int(torch.randint(0, height - side + 1, ()))
        left = int(torch.randint(0, width - side + 1, ()))
        windows.append(images[i % len(images), :, top : top + side, left : left + side])
    return torch.stack(windows)


def anomalous_positions(test_set: Dataset, group: list[int]) -> list[int]:
    """Positions in ``group`` of truly anomalous images: reads labels, so only the contamination
    ablation may call it before evaluation."""
    return [pos for pos, index in enumerate(group) if int(test_set[index]["label"]) == 1]


class ProgressiveGroupTraining(Curriculum):
    """Progressive group-wise test-time training of an ARD refiner (``curriculum=pgt``)."""

    trains_refiner = True

    def __init__(
        self,
        mode: Mode = "progressive",
        group_size: int = 13,
        order: Order = "shuffle",
        order_seed: int = 0,
        first_group: FirstGroup = "self",
        pseudo_normal_ratio: float = 0.5,
        contamination: float = 0.0,
        steps_per_group: int = 100,
        batch_size: int = 8,
        crop_size: int = 128,
        synthetic_per_group: int = 48,
        synthesis_on: SynthesisOn = "tile",
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        focal_gamma: float = 2.0,
        dice_weight: float = 1.0,
        synthesis: AnomalySynthesizer | None = None,
    ) -> None:
        closed = (
            ("mode", mode, Mode),
            ("first_group", first_group, FirstGroup),
            ("synthesis_on", synthesis_on, SynthesisOn),
        )
        for name, value, choices in closed:
            allowed = get_args(choices)
            if value not in allowed:
                raise AnorefineError(f"curriculum.{name}={value!r} is unknown: use one of {allowed}")
        if not 0.0 < pseudo_normal_ratio <= 1.0 or not 0.0 <= contamination <= 1.0:
            raise AnorefineError(
                "curriculum.pseudo_normal_ratio must be in (0, 1] and contamination in [0, 1]"
            )
        self.mode, self.group_size, self.order, self.order_seed = mode, group_size, order, order_seed
        self.first_group, self.ratio, self.contamination = first_group, pseudo_normal_ratio, contamination
        self.steps_per_group, self.batch_size, self.crop_size = steps_per_group, batch_size, crop_size
        self.synthetic_per_group, self.synthesis_on = synthetic_per_group, synthesis_on
        self.optim = {
            "lr": lr,
            "weight_decay": weight_decay,
            "focal_gamma": focal_gamma,
            "dice_weight": dice_weight,
        }
        self.synthesis = synthesis or AnomalySynthesizer()

    def evaluate(
        self, task: AnomalyTask, make_trainer: Callable[..., L.Trainer], test_set: Dataset, batch_size: int
    ) -> dict[str, Any]:
        if not isinstance(task.refiner, TrainableRefiner) or not task.refiner.trainable:
            raise AnorefineError("curriculum=pgt trains the refiner: use it with a trainable refiner (ard)")
        count = len(test_set)  # type: ignore[arg-type]  # a map-style dataset has a length
        groups = stream_groups(count, self.group_size, self.order, self.order_seed)
        records: list[dict[str, Any]] = [{"indices": group} for group in groups]
        session = _Session(self, task, make_trainer, test_set, batch_size)
        last = len(groups) - 1
        streaming = task.detector.stream_reference and self.mode != "offline"
        if not streaming:  # a transductive detector sees the whole category at once
            show_reference(task, test_set)
        if self.mode == "offline":  # the same number of steps as a progressive stream
            session.train(groups, records, self.steps_per_group * max(1, last))
        image_records = getattr(test_set, "records", None)  # AnomalyImageDataset: name the category
        label = f"{image_records[0].category}: PGT" if image_records else "PGT"
        progress = ProgressLog(log, label, len(groups), "groups")
        for g, group in enumerate(groups):
            if streaming:  # the images that arrived so far, this group included
                show_reference(task, test_set, [i for arrived in groups[: g + 1] for i in arrived])
            trains_first = self.mode != "offline" and g == 0 and self.first_group == "self"
            if trains_first:
                session.train([group], records[:1], self.steps_per_group)
            records[g]["refined_by"] = self._refined_by(g)
            records[g].update(session.test(group, step=g))
            if self.mode != "offline" and not trains_first and g < last:
                session.train([group], records[g : g + 1], self.steps_per_group)
            progress.advance()
        for group, record in zip(groups, records, strict=True):
            if "pseudo_normals" in record:  # reported after every group was scored: evaluation
                pool = {group.index(i) for i in record["pseudo_normals"]}
                record["pool_anomalous"] = sum(p in pool for p in anomalous_positions(test_set, group))
        return {
            "mode": self.mode,
            "group_size": self.group_size,
            "groups": records,
            **{f"{stage}_pixel_ap_curve": [r[f"{stage}_pixel_ap"] for r in records] for stage in STAGES},
        }

    def _refined_by(self, g: int) -> str:
        if self.mode == "offline":
            return "offline"
        if g == 0:
            return "group 0 (self)" if self.first_group == "self" else "base (untrained)"
        return f"group {g - 1}"


class _Session:
    """One category's PGT state: the detector passes, the pseudo-normal pools, training and tests."""

    def __init__(
        self,
        settings: ProgressiveGroupTraining,
        task: AnomalyTask,
        make_trainer: Callable[..., L.Trainer],
        test_set: Dataset,
        batch_size: int,
    ) -> None:
        self.settings, self.task, self.make_trainer = settings, task, make_trainer
        self.test_set, self.images, self.batch_size = test_set, ImagesOnly(test_set), batch_size
        self.refiner: TrainableRefiner = task.refiner  # type: ignore[assignment]  # checked above
        self.calibrated = False

    def detect(self, dataset: Dataset | list[dict[str, Any]]) -> dict[str, Any]:
        """The frozen detector's outputs (and the images) under a Trainer's predict loop."""
        trainer = self.make_trainer(inference_mode=False)  # cached tensors feed autograd later
        batches = trainer.predict(
            DetectorPass(self.task.detector), DataLoader(cast(Dataset, dataset), batch_size=self.batch_size)
        )
        return collate_outputs(cast(list[dict[str, Any]], batches))  # one dict per batch, as predicted

    def pseudo_normals(self, group: list[int]) -> tuple[dict[str, Any], list[int], list[int]]:
        """(detector outputs of the pool, pool dataset indices, those forced in as contamination)."""
        outputs = self.detect(Subset(self.images, group))
        settings = self.settings
        count = max(1, round(settings.ratio * len(group)))
        forced: list[int] = []
        if settings.contamination > 0:
            anomalous = anomalous_positions(self.test_set, group)
            wanted = min(len(anomalous), round(settings.contamination * count))
            forced = [anomalous[i] for i in torch.randperm(len(anomalous))[:wanted].tolist()]
        positions = forced + lowest_scored(outputs["image_score"], count - len(forced), exclude=set(forced))
        pool = {k: v[positions] if torch.is_tensor(v) else v for k, v in outputs.items()}
        return pool, [group[p] for p in positions], [group[p] for p in forced]

    def train(self, groups: list[list[int]], records: list[dict[str, Any]], steps: int) -> None:
        """Train the ARD on synthetic anomalies painted on the pseudo-normals of ``groups``."""
        settings, refiner, clock = self.settings, self.refiner, self.task.clock
        pools = []
        for group, record in zip(groups, records, strict=True):
            with clock.stage("pgt_pool"):
                pool, indices, forced = self.pseudo_normals(group)
            record.update(pseudo_normals=indices, forced_anomalous=forced)
            pools.append(pool)
        pool = collate_outputs(pools)
        size = spatial_size(pool["image"])
        geometry = {name: pool[name] for name in GEOMETRY}
        as_output = DetectorOutput(pool["anomaly_map"], pool["image_score"], pool["features"], **geometry)
        if not self.calibrated:
            refiner.calibrate(pool["anomaly_map"], pool["features"])
            self.calibrated = True
        if settings.mode == "scratch" or not refiner.is_built:
            refiner.build(as_output, size)
        count = settings.synthetic_per_group * len(groups)
        side = (self.task.detector.tile_side if settings.synthesis_on == "tile" else None) or 0
        windowed = 0 < side < min(size)  # windows stand in for the pool: defects at a tile's scale
        with clock.stage("pgt_synthesis", len(groups)):
            if windowed:
                normals = random_windows(pool["image"], len(pool["image"]), side)
                images, masks = settings.synthesis(random_windows(pool["image"], count, side), count)
            else:
                normals = pool["image"]
                images, masks = settings.synthesis(normals, count)
        with clock.stage("pgt_detector_maps", len(groups)):
            synthetic = self.detect([{"image": image} for image in images])
            normal = self.detect([{"image": image} for image in normals]) if windowed else pool
        grid, width = normal["anomaly_map"].shape[-1], normals.shape[-1]
        all_images = torch.cat([images, normals])
        all_maps = torch.cat([synthetic["anomaly_map"], normal["anomaly_map"]])
        pairs = SyntheticPairs(
            all_images,
            torch.cat([masks, torch.zeros_like(normals[:, :1])]),
            all_maps,
            torch.cat([synthetic["features"], normal["features"]]),
            cues=self.pixel_cues(all_images, all_maps),
            crop_cells=round(settings.crop_size * grid / width) if settings.crop_size else 0,
        )
        module = ArdTrainingModule(refiner, geometry, **settings.optim)
        loader = DataLoader(
            pairs, batch_size=settings.batch_size, shuffle=True, drop_last=len(pairs) > settings.batch_size
        )
        log_every = max(1, min(10, len(loader)))  # within one epoch: Lightning warns otherwise
        trainer = self.make_trainer(purpose="fit", max_steps=steps, log_every_n_steps=log_every)
        per_epoch = max(1, len(loader) // trainer.world_size)  # a rank's share under DDP
        trainer.fit_loop.max_epochs = -(-steps // per_epoch)  # reaches max_steps; the bar reads "Epoch k/N"
        with clock.stage("pgt_train", len(groups)):
            trainer.fit(module, loader)
        tail = module.losses[-max(1, len(module.losses) // 5) :]
        for record in records:
            record["train_loss"] = sum(tail) / len(tail)

    def pixel_cues(self, images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor | None:
        """The ARD's pixel cues of whole images (CPU), computed once per training set in batches."""
        if not self.refiner.cue_channels:
            return None
        device = next(self.refiner.parameters()).device
        cues = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            chunk_cues = self.refiner.pixel_cues(images[chunk].to(device), maps[chunk].to(device))
            assert chunk_cues is not None  # cue_channels > 0: the refiner computes cues
            cues.append(chunk_cues.cpu())
        return torch.cat(cues)

    def test(self, group: list[int], step: int) -> dict[str, float | None]:
        """Score one group through the task (the only place masks are read); its pixel AP per stage."""
        starts = {stage: len(self.task.metric(stage).anomaly_maps) for stage in STAGES}
        trainer = self.make_trainer()
        trainer.test(
            self.task,
            dataloaders=DataLoader(Subset(self.test_set, group), batch_size=self.batch_size),
            verbose=False,
        )
        scores = {
            f"{stage}_pixel_ap": self.task.metric(stage).pixel_ap_since(starts[stage]) for stage in STAGES
        }
        if trainer.logger:
            trainer.logger.log_metrics({f"pgt/{k}": v for k, v in scores.items() if v is not None}, step=step)
        return scores
