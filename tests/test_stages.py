"""The stage clock (anorefine/stages.py) and the per-stage timings every run records in results.json."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import TINY_RUN, run_train

from anorefine.stages import UNITS, StageClock, maxrss_mb

#: PGT at its smallest on one demo category: two groups, one step and two synthetic images each.
TINY_PGT = ["refiner=ard", "curriculum=pgt", "curriculum.group_size=26", "curriculum.steps_per_group=1",
            "curriculum.synthetic_per_group=2"]  # fmt: skip


class FakeTime:
    """A time source that advances only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_clock_adds_seconds_and_counts_per_stage() -> None:
    time = FakeTime()
    clock = StageClock(clock=time)
    for seconds in (2.0, 3.0):
        with clock.stage("fit", count=4):
            time.now += seconds
    clock.add("read", 0.5, count=0)
    assert clock.as_dict() == {"fit": {"seconds": 5.0, "count": 8}, "read": {"seconds": 0.5, "count": 0}}


def test_nested_stages_are_excluded_from_the_outer_one() -> None:
    time = FakeTime()
    clock = StageClock(clock=time)
    with clock.stage("fit"):
        time.now += 1.0
        for _ in range(2):
            with clock.stage("read"):
                time.now += 0.25
                with clock.stage("decode"):
                    time.now += 0.5
        time.now += 1.0
    totals = clock.as_dict()
    assert totals["fit"] == {"seconds": 2.0, "count": 1}
    assert totals["read"] == {"seconds": 0.5, "count": 2}
    assert totals["decode"] == {"seconds": 1.0, "count": 2}
    assert sum(t["seconds"] for t in totals.values()) == time.now  # nothing counted twice


def test_a_failing_block_is_still_timed_and_leaves_the_clock_usable() -> None:
    time = FakeTime()
    clock = StageClock(clock=time)
    with pytest.raises(RuntimeError), clock.stage("fit"):
        time.now += 1.0
        raise RuntimeError("boom")
    with clock.stage("refine"):
        time.now += 2.0
    assert clock.as_dict() == {"fit": {"seconds": 1.0, "count": 1}, "refine": {"seconds": 2.0, "count": 1}}


def test_sync_runs_at_both_ends_of_every_stage() -> None:
    calls: list[str] = []
    clock = StageClock(clock=FakeTime(), sync=lambda: calls.append("sync"))
    with clock.stage("detector_maps"):
        calls.append("work")
    assert calls == ["sync", "work", "sync"]


@pytest.mark.parametrize(("platform", "ru_maxrss"), [("linux", 2048), ("darwin", 2 << 20)])
def test_maxrss_is_read_in_megabytes(monkeypatch: pytest.MonkeyPatch, platform: str, ru_maxrss: int) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert maxrss_mb(ru_maxrss) == 2.0


@pytest.mark.slow
def test_a_pgt_run_records_every_stage_within_its_wall_time(demo_root: Path, tmp_path: Path) -> None:
    args = [f"dataset.root={demo_root}", "dataset.categories=[brick]", *TINY_RUN, *TINY_PGT]
    run = run_train(args, tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    timings = run.results["timings"]
    assert timings["prepare_s"] >= 0.0
    brick = timings["per_category"]["brick"]
    stages = brick["stages"]
    assert set(stages) == set(UNITS) - {"reference", "reference_features"}  # PatchCore is not transductive
    for name, entry in stages.items():
        assert entry["count"] > 0 and entry["seconds"] >= 0.0, name
    assert stages["pgt_train"]["count"] == 1  # group 0 trains on itself; group 1 is the last
    assert stages["detector_maps"]["count"] == stages["refine"]["count"]
    assert sum(entry["seconds"] for entry in stages.values()) <= brick["fit_s"] + brick["test_s"] + 0.05
    assert brick["peak_rss_mb"] > 100.0
