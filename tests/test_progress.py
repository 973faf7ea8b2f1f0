"""Progress lines of long stages: rate-limited, with an ETA from the mean rate, always at the end."""

from __future__ import annotations

import logging

import pytest

from anorefine.progress import ProgressLog


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
