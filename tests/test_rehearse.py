"""``make rehearse`` (scripts/rehearse.py) and the projection it reports (anorefine/projection.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO
from omegaconf import OmegaConf

from anorefine.projection import Population, pgt_rounds, project_category, stage_scale


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rehearse", REPO / "scripts" / "rehearse.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


rehearse = load_script()
PGT = {"curriculum": {"group_size": 2, "steps_per_group": 2, "synthetic_per_group": 2}}
REAL_PGT = {"curriculum": {"group_size": 13, "steps_per_group": 100, "synthetic_per_group": 48}}


def test_stages_scale_with_images_groups_and_budgets() -> None:
    run, real = OmegaConf.create(PGT), OmegaConf.create(REAL_PGT)
    measured, full = Population(train=4, test=4), Population(train=200, test=83)
    assert stage_scale("fit", real, run, full, measured, True, False) == 50.0
    assert stage_scale("detector_maps", real, run, full, measured, True, False) == 83 / 4
    assert stage_scale("detector_maps", real, run, full, measured, False, True) == 83 / 4
    assert stage_scale("reference", real, run, full, measured, False, True) == (83 / 4) ** 2
    assert stage_scale("reference_features", real, run, full, measured, False, True) == 83 / 4
    assert stage_scale("read", real, run, full, measured, True, False) == 283 / 8
    assert pgt_rounds(83, 13) == 6 and pgt_rounds(4, 2) == 1
    assert stage_scale("pgt_train", real, run, full, measured, True, False) == 6 * 50
    assert stage_scale("pgt_synthesis", real, run, full, measured, True, False) == 6 * 24
    timing = {"fit_s": 3.0, "test_s": 5.0, "metrics_s": 1.0, "stages": {"fit": {"seconds": 2.0, "count": 4}}}
    other = 3.0 + 5.0 - 1.0 - 2.0
    expected = 2.0 * 50 + 1.0 * 83 / 4 + other
    assert project_category(timing, real, run, full, measured, True, False) == pytest.approx(expected)
    on_gpu = 2.0 * 50 / 100 + 1.0 * 83 / 4 + other  # the fit on the device, the metrics and the rest not
    assert project_category(timing, real, run, full, measured, True, False, 100.0) == pytest.approx(on_gpu)


def test_each_stand_in_category_has_enough_test_images_for_musc() -> None:
    """MuSc needs MIN_REFERENCE other test images: bottle needs fraction 0.08 (2 of each of its four
    test folders), grid 0.02 (one of each of its six), candle 0.03 (3 normal and 3 anomalous)."""
    assert rehearse.standin_fraction("mvtec", "bottle") == 0.08
    assert rehearse.count_test_images("mvtec", "bottle", 0.08) == 8
    assert rehearse.standin_fraction("mvtec", "grid") == 0.02
    assert rehearse.count_test_images("mvtec", "grid", 0.02) == 6
    assert rehearse.standin_fraction("visa", "candle") == 0.03
    assert rehearse.count_test_images("visa", "candle", 0.03) == 6
    for dataset, category in rehearse.CATEGORIES.items():
        fraction = rehearse.standin_fraction(dataset, category)
        assert rehearse.count_test_images(dataset, category, fraction) >= rehearse.MIN_REFERENCE + 1


def test_bad_options_exit_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--jobs", "0"], ["--only", "nope"]):
        with pytest.raises(SystemExit) as raised:
            rehearse.main(argv)
        assert raised.value.code == 2
        assert argv[0] in capsys.readouterr().err


def test_the_jobs_are_the_presets_own() -> None:
    assert len(rehearse.list_jobs("anorefiner")) == 18
    jobs = rehearse.list_jobs("f2pad")
    assert len(jobs) == 6 and "experiment=f2pad" in jobs[0].overrides


@pytest.mark.slow
def test_quick_rehearsal_reports_resumes_and_survives_a_failing_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One real job of the F2PAD table and one forced to fail (an unknown setting), end to end."""
    listed = rehearse.list_jobs

    def two_jobs(preset: str) -> list:
        first = listed(preset)[0]
        broken = rehearse.Job(preset, "broken", [*first.overrides, "+model.no_such_setting=1"])
        return [first, broken]

    monkeypatch.setattr(rehearse, "list_jobs", two_jobs)
    out, doc = tmp_path / "out", tmp_path / "report.md"
    argv = ["--quick", "--only", "f2pad", "--out", str(out), "--doc", str(doc)]
    assert rehearse.main(argv) == 1  # the broken job failed; the other ran
    records = json.loads((out / rehearse.RECORD_FILE).read_text())
    first, broken = (f"f2pad/{job.key}" for job in two_jobs("f2pad"))
    assert records[first]["status"] == "done" and records[first]["peak_rss_mb"] > 100
    assert records[first]["load_at_start"] >= 0  # the machine's 1-minute load when the job started
    assert records[broken]["status"].startswith("failed") and records[broken]["error"]
    report = doc.read_text()
    for row in ("| grid | fit |", "| grid | detector_maps |", "| experiment=f2pad | 1 of 2 |"):
        assert row in report
    assert "no_such_setting" in report  # the failing job's last lines
    wall = records[first]["wall_s"]
    capsys.readouterr()
    assert rehearse.main(argv) == 1
    assert "finished earlier, skipped" in capsys.readouterr().out
    assert json.loads((out / rehearse.RECORD_FILE).read_text())[first]["wall_s"] == wall
