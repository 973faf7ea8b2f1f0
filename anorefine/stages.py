"""A stage clock: seconds and counts per named stage of one category (``timings.per_category.<c>.stages``).

Stages may nest; a stage's seconds exclude the stages opened inside it (reading images inside a
detector's fit counts as ``read``, not ``fit``), so a category's stage seconds add up to no more than
its wall time. Without CUDA synchronisation (``sync``) GPU work is charged to whichever stage waits
for it. This module imports no torch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: What each stage's count counts (docs/experiments.md): per image, per train image or per PGT group.
UNITS: dict[str, str] = {
    "read": "images",  # listing a split's files (count 0) and decoding each image read
    "fit": "train images",  # the detector's fit (reads excluded)
    "reference_features": "images",  # a transductive detector's per-image pass (MuSc: its features)
    "reference": "images",  # its scoring of the reference test images against each other (MuSc's MSM)
    "detector_maps": "images",  # the detector's forward and base map on test images
    "refine": "images",  # the refiner's forward on test images
    "pgt_pool": "groups",  # PGT: the detector's pass over a group to pick its pseudo-normals
    "pgt_synthesis": "groups",  # PGT: painting the group's synthetic anomalies
    "pgt_detector_maps": "groups",  # PGT: the detector's maps of the synthetic images
    "pgt_train": "groups",  # PGT: the ARD's training steps on one group
}


@dataclass
class StageTotal:
    """One stage's accumulated seconds and count."""

    seconds: float = 0.0
    count: int = 0


class StageClock:
    """Accumulates exclusive seconds and counts per stage name; one instance per category."""

    def __init__(
        self, clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] | None = None
    ) -> None:
        """``clock``: the time source (injected by tests); ``sync``: called at every stage boundary
        (``torch.cuda.synchronize`` on a GPU, so that asynchronous kernels land in their stage)."""
        self._clock, self._sync = clock, sync
        self.totals: dict[str, StageTotal] = {}
        self._inner: list[float] = []  # per open stage: seconds spent in the stages opened inside it

    def add(self, name: str, seconds: float, count: int = 1) -> None:
        """Charge ``seconds`` and ``count`` to stage ``name``."""
        total = self.totals.setdefault(name, StageTotal())
        total.seconds += seconds
        total.count += count

    @contextmanager
    def stage(self, name: str, count: int = 1) -> Iterator[None]:
        """Time the block as stage ``name`` (its nested stages excluded) and add ``count`` to it."""
        if self._sync is not None:
            self._sync()
        started = self._clock()
        self._inner.append(0.0)
        try:
            yield
        finally:
            if self._sync is not None:
                self._sync()
            elapsed = self._clock() - started
            self.add(name, elapsed - self._inner.pop(), count)
            if self._inner:
                self._inner[-1] += elapsed

    def as_dict(self) -> dict[str, dict[str, float | int]]:
        """``{stage: {"seconds", "count"}}`` in the order the stages first ran."""
        return {name: {"seconds": t.seconds, "count": t.count} for name, t in self.totals.items()}


def maxrss_mb(ru_maxrss: int) -> float:
    """``getrusage``'s ``ru_maxrss`` in MB (kilobytes on Linux, bytes on macOS)."""
    return ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
