"""The curriculum contract and the plain one: the whole test split in one pass, refiner untouched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from anorefine.task import AnomalyTask


def show_reference(task: AnomalyTask, test_set: Dataset, indices: list[int] | None = None) -> None:
    """Give a transductive detector (MuSc) its reference images: the test images ``indices`` (all by
    default), with their folder names (MuSc's subsets balance them) but never their masks or labels.
    Other detectors ignore it."""
    detector = task.detector
    if not detector.transductive:
        return
    chosen = range(len(test_set)) if indices is None else indices  # type: ignore[arg-type]  # map-style
    device = next((t.device for t in detector.state_dict().values()), torch.device("cpu"))
    with task.clock.stage("reference_features", len(chosen)):
        items = [test_set[i] for i in chosen]
        images = torch.stack([item["image"] for item in items]).to(device)
        detector.encode_reference(images)  # per image: linear in the images
    with task.clock.stage("reference", len(chosen)):
        detector.set_reference(images, [item["folder"] for item in items])  # each against the others


class Curriculum:
    """Drives the test pass of one category through ``task``'s metric accumulators.

    ``evaluate`` must show every test image to ``trainer.test`` exactly once, and may train the
    refiner between passes (it never reads masks: only the task's metrics do). It returns extra,
    JSON-serialisable results (e.g. a per-group curve) to store beside the metrics.
    """

    #: True for curricula that train the refiner (a trainable refiner needs one; others must not).
    trains_refiner: bool = False

    def evaluate(
        self, task: AnomalyTask, make_trainer: Callable[[], L.Trainer], test_set: Dataset, batch_size: int
    ) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


class SinglePass(Curriculum):
    """No curriculum: one test pass over the split with the refiner as built."""

    def evaluate(
        self, task: AnomalyTask, make_trainer: Callable[[], L.Trainer], test_set: Dataset, batch_size: int
    ) -> dict[str, Any]:
        show_reference(task, test_set)
        make_trainer().test(task, dataloaders=DataLoader(test_set, batch_size=batch_size), verbose=False)
        return {}
