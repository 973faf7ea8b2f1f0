"""Progress lines for long stages: a run without a terminal (SLURM, nohup) shows no progress bar, so a
stage that takes minutes logs ``label: done/total unit, elapsed, about N s left`` instead, at most once
every ``interval`` seconds and always when it finishes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Seconds between two progress lines of one stage (the last one is always logged).
PROGRESS_INTERVAL_S = 30.0


class ProgressLog:
    """Counts finished units of a stage and logs its progress with an ETA from the mean rate so far."""

    def __init__(
        self,
        log: logging.Logger,
        label: str,
        total: int,
        unit: str,
        interval: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.label, self.total, self.unit = log, label, total, unit
        self.interval, self.clock = interval, clock
        self.started = self.last_logged = clock()
        self.done = 0

    def advance(self, count: int = 1) -> None:
        """Record ``count`` more finished units; log a line when due (or when the stage is complete)."""
        self.done += count
        now = self.clock()
        if self.done < self.total and now - self.last_logged < self.interval:
            return
        self.last_logged = now
        elapsed = now - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        eta = f", about {left:.0f} s left" if self.done < self.total else ""
        self.log.info(
            "%s: %d/%d %s, %.0f s elapsed%s", self.label, self.done, self.total, self.unit, elapsed, eta
        )
