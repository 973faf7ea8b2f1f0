"""Progress lines of long stages: rate-limited, with an ETA from the mean rate, always at the end; a
category's test pass and MuSc's mutual scoring speak through them."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from anorefine.detectors.base import Detector
from anorefine.detectors.musc import MuscDetector
from anorefine.progress import ProgressLog
from anorefine.refiners.baseline import BaselineRefiner
from anorefine.task import AnomalyTask


def test_lines_come_at_most_every_interval_and_always_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = logging.getLogger("anorefine.test_progress")
    progress = ProgressLog(log, "brick: PGT", total=5, unit="groups", interval=30.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger=log.name):
        for seconds in (10.0, 20.0, 40.0, 45.0, 50.0):  # units finish at these times
            now[0] = seconds
            progress.advance()
    assert [record.getMessage() for record in caplog.records] == [
        "brick: PGT: 3/5 groups, 40 s elapsed, about 27 s left",
        "brick: PGT: 5/5 groups, 50 s elapsed",
    ]


def test_the_task_counts_scored_test_images_per_batch(caplog: pytest.LogCaptureFixture) -> None:
    """A category's test pass logs images done / total (``run_category`` gives the task its ProgressLog)."""
    now = [0.0]
    log = logging.getLogger("anorefine.test_progress")
    progress = ProgressLog(log, "brick: scoring", total=40, unit="images", clock=lambda: now[0])
    task = AnomalyTask(Detector(), BaselineRefiner(), progress=progress)
    with caplog.at_level(logging.INFO, logger=log.name):
        for batch_idx, (seconds, size) in enumerate([(10.0, 16), (35.0, 16), (50.0, 8)]):
            now[0] = seconds
            task.on_test_batch_end(None, {"image": torch.zeros(size, 3, 8, 8)}, batch_idx)
    assert [record.getMessage() for record in caplog.records] == [
        "brick: scoring: 32/40 images, 35 s elapsed, about 9 s left",
        "brick: scoring: 40/40 images, 50 s elapsed",
    ]


def test_musc_logs_its_mutual_scoring(caplog: pytest.LogCaptureFixture) -> None:
    """One pass per reference image and r; a fast scoring logs only its last line (every 30 s at most)."""
    detector = MuscDetector(image_size=64, r_list=(1, 3), k_list=(0,))
    detector.setup_category("brick")
    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger="anorefine.detectors.musc"):
        detector.set_reference(images)
        detector.set_reference(images)  # every image scored already: nothing to log
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert re.fullmatch(
        r"brick: MuSc mutual scoring: 12/12 image passes \(one per r\), \d+ s elapsed", messages[0]
    )
