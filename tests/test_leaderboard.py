"""Leaderboard tables from synthetic run folders: numbers, seeds, ablations, problems, papers, CLI."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from anorefine.leaderboard import COLUMNS, build_leaderboard, latex_escape, load_papers, parse_overrides
from anorefine.run_folder import write_json_atomic


def metrics(base: float, refined: float) -> dict[str, dict[str, float]]:
    return {"base": dict.fromkeys(COLUMNS, base), "refined": dict.fromkeys(COLUMNS, refined)}


def results(
    dataset: str = "demo",
    model: str = "patchcore",
    refiner: str = "none",
    overrides: tuple[str, ...] = (),
    seed: int = 0,
    value: float = 0.5,
    delta: float = 0.0,
    **extra: Any,
) -> dict[str, Any]:
    """A results.json with categories a and b scoring ``value`` (base) and ``value + delta`` (refined)."""
    per_category = {
        "a": metrics(value - 0.1, value - 0.1 + delta),
        "b": metrics(value + 0.1, value + 0.1 + delta),
    }
    return {
        "dataset": dataset,
        "model": model,
        "refiner": refiner,
        "categories": ["a", "b"],
        "metrics": {**per_category, "mean": metrics(value, value + delta)},
        "config": {"seed": seed, "curriculum": {"name": "pgt" if refiner == "ard" else "none"}},
        "overrides": [f"model={model}", f"refiner={refiner}", f"seed={seed}", *overrides],
        **extra,
    }


def write_run(folder: Path, payload: dict[str, Any]) -> Path:
    write_json_atomic(folder / "results.json", payload)
    return folder


def csv_rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "LEADERBOARD.csv").open()))


def test_seeds_are_averaged_with_sample_std_and_delta(tmp_path: Path) -> None:
    for seed, value in ((0, 0.5), (1, 0.6), (2, 0.7)):
        payload = results(refiner="ard", seed=seed, value=value, delta=0.02, git_commit="abc1234")
        write_run(tmp_path / f"s{seed}", payload)
    board = build_leaderboard([tmp_path], tmp_path)
    (row,) = [row for row in csv_rows(tmp_path) if row["table"] == "main"]
    assert (row["method"], row["runs"], row["seeds"]) == ("ard+pgt", "3", "0 1 2")
    assert float(row["pixel_ap_refined"]) == pytest.approx(0.62)
    assert float(row["pixel_ap_refined_std"]) == pytest.approx(statistics.stdev([0.52, 0.62, 0.72]))
    assert float(row["pixel_ap_delta"]) == pytest.approx(0.02)
    markdown = (tmp_path / "LEADERBOARD.md").read_text()
    assert "62.00 ± 10.00 (+2.00)" in markdown
    assert "Code: git commit `abc1234` (3 run(s))." in markdown
    assert "### demo / a" in markdown and "### demo / b" in markdown  # per-category tables
    assert not board.problems


def test_the_same_config_found_twice_counts_once(tmp_path: Path) -> None:
    for sweep in ("sweep_a", "sweep_b"):
        write_run(tmp_path / sweep / "job", results(config_hash="abc", value=0.5))
    write_run(tmp_path / "other_seed", results(config_hash="def", seed=1, value=0.7))
    build_leaderboard([tmp_path], tmp_path)
    (row,) = [row for row in csv_rows(tmp_path) if row["table"] == "main"]
    assert (row["runs"], row["seeds"]) == ("2", "0 1")
    assert float(row["pixel_ap_refined"]) == pytest.approx(0.6)


def test_runs_keep_their_exact_numbers_per_category(tmp_path: Path) -> None:
    payload = results(value=0.123456789012345, delta=1e-9)
    write_run(tmp_path / "run", payload)
    build_leaderboard([tmp_path], tmp_path)
    rows = {row["category"]: row for row in csv_rows(tmp_path) if row["table"] == "run"}
    assert set(rows) == {"a", "b", "mean"}
    for category, row in rows.items():
        for key in COLUMNS:
            assert float(row[f"{key}_base"]) == payload["metrics"][category]["base"][key]
            assert float(row[f"{key}_refined"]) == payload["metrics"][category]["refined"][key]


def test_rows_with_other_settings_stay_apart_and_the_ablation_pivots_the_swept_key(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun" / "ablation_group_size"
    jobs = []
    for size in (4, 13):
        for seed in (0, 1):
            overrides = (f"curriculum.group_size={size}", "logger=none")
            payload = results(refiner="ard", overrides=overrides, seed=seed, value=0.3 + size / 100)
            jobs.append({"overrides": payload["overrides"], "dir": f"{size}-{seed}"})
            write_run(sweep / f"{size}-{seed}", payload)
    jobs.append({"overrides": ["curriculum.group_size=26", "seed=0"], "dir": "26-0"})
    write_json_atomic(sweep / "sweep.json", {"jobs": jobs})
    board = build_leaderboard([tmp_path], tmp_path)
    main = [row for row in csv_rows(tmp_path) if row["table"] == "main"]
    assert sorted(row["setting"] for row in main) == ["curriculum.group_size=13", "curriculum.group_size=4"]
    ablation = [table for table in board.tables if table.kind == "ablation"]
    assert [table.title for table in ablation] == ["ablation_group_size"]
    assert ablation[0].label_columns[-1] == "curriculum.group_size"
    assert [row.labels[-1] for row in ablation[0].rows] == ["4", "13"]  # numeric order
    assert [(p.kind, p.path.name) for p in board.problems] == [("missing", "26-0")]
    assert "| missing |" in (tmp_path / "LEADERBOARD.md").read_text()


def test_failed_incomplete_and_malformed_jobs_are_listed_not_dropped(tmp_path: Path) -> None:
    write_run(tmp_path / "good", results())
    write_json_atomic(tmp_path / "failed" / "failure.json", {"error": "RuntimeError: out of memory\nmore"})
    (tmp_path / "killed" / ".hydra").mkdir(parents=True)
    (tmp_path / "truncated").mkdir()
    (tmp_path / "truncated" / "results.json").write_text('{"dataset": "demo", "metr')
    write_run(tmp_path / "no_mean", {**results(), "metrics": {"a": metrics(0.1, 0.2)}})
    board = build_leaderboard([tmp_path], tmp_path / "out")
    kinds = sorted(
        (p.kind, p.path.parent.name if p.kind == "malformed" else p.path.name) for p in board.problems
    )
    assert kinds == [
        ("failed", "failed"),
        ("incomplete", "killed"),
        ("malformed", "no_mean"),
        ("malformed", "truncated"),
    ]
    assert len(board.runs) == 1
    markdown = (tmp_path / "out" / "LEADERBOARD.md").read_text()
    assert "RuntimeError: out of memory" in markdown and "## Skipped result files" in markdown
    statuses = sorted(row["status"] for row in csv_rows(tmp_path / "out") if row["table"] == "problem")
    assert statuses == ["failed", "incomplete", "malformed", "malformed"]


def test_smoke_only_rows_are_marked(tmp_path: Path) -> None:
    write_run(tmp_path / "tiny", results(model="winclip", smoke_only=True))
    write_run(tmp_path / "real", results(model="patchcore"))
    build_leaderboard([tmp_path], tmp_path)
    markdown = (tmp_path / "LEADERBOARD.md").read_text()
    assert "| winclip † |" in markdown and "| patchcore |" in markdown
    assert "smoke-only" in markdown
    smoke = {row["model"]: row["smoke_only"] for row in csv_rows(tmp_path) if row["table"] == "main"}
    assert smoke == {"winclip": "True", "patchcore": "False"}
    assert r"winclip $^\dagger$" in (tmp_path / "LEADERBOARD.tex").read_text()


def test_paper_rows_join_their_dataset_with_their_metric_definitions(tmp_path: Path) -> None:
    write_run(tmp_path / "run", results(dataset="mvtec", model="anomalyclip"))
    build_leaderboard([tmp_path], tmp_path)
    rows = csv_rows(tmp_path)
    papers = {(row["dataset"], row["model"]): row for row in rows if row["table"] == "published"}
    assert set(papers) == {
        ("mvtec", "anomalyclip"),
        ("mvtec", "winclip"),
        ("mvtec", "patchcore"),
        ("mvtec", "musc"),
        ("visa", "anomalyclip"),  # no VisA run: its table shows the published numbers alone
        ("visa", "winclip"),
        ("visa", "musc"),
    }
    assert float(papers["mvtec", "anomalyclip"]["pro_compat_refined"]) == pytest.approx(0.814)
    assert papers["mvtec", "anomalyclip"]["aupro_refined"] == ""  # a 200-threshold PRO is not an AUPRO
    assert float(papers["mvtec", "patchcore"]["aupro_refined"]) == pytest.approx(0.944)
    assert float(papers["visa", "winclip"]["image_auroc_refined"]) == pytest.approx(0.781)
    assert [row["model"] for row in rows if row["table"] == "main"] == ["anomalyclip"]
    markdown = (tmp_path / "LEADERBOARD.md").read_text()
    assert "200 thresholds" in markdown
    assert "## visa" in markdown and "published numbers only" in markdown
    assert "AnoRefiner (published claim): pixel AP (P-AP) up to +5.2 points" in markdown  # no row


def test_every_paper_file_is_valid() -> None:
    papers = load_papers()
    assert {paper.model for paper in papers} >= {"anomalyclip", "winclip", "patchcore", "ard", "musc"}
    for paper in papers:
        assert paper.source and paper.metrics and paper.datasets
        assert paper.claims or all(paper.datasets.values())  # numbers, or a claim to note


def test_helpers() -> None:
    assert parse_overrides(["+a.b=1", "~c", "d=x=y"]) == {"a.b": "1", "c": "~", "d": "x=y"}
    assert latex_escape("pixel_ap 50% ± 1") == r"pixel\_ap 50\% $\pm$ 1"


def test_cli_writes_the_three_files_and_reports_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("leaderboard_cli", REPO / "scripts" / "leaderboard.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    write_run(tmp_path / "runs" / "ok", results())
    write_run(tmp_path / "more" / "sweep" / "ard", results(refiner="ard"))
    write_json_atomic(tmp_path / "runs" / "bad" / "failure.json", {"error": "ValueError: boom"})
    roots = [str(tmp_path / "runs"), str(tmp_path / "more")]
    assert cli.main([*roots, "--out", str(tmp_path / "out")]) == 0
    merged = {row["method"] for row in csv_rows(tmp_path / "out") if row["table"] == "main"}
    assert merged == {"none", "ard+pgt"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "LEADERBOARD.csv",
        "LEADERBOARD.md",
        "LEADERBOARD.tex",
    ]
    assert "failed:" in capsys.readouterr().out
    assert cli.main([str(tmp_path / "nowhere")]) == 2


def test_the_tables_equal_the_recorded_ones_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fixture tree's LEADERBOARD.{md,csv,tex} equal the files recorded before the pandas rewrite."""
    from leaderboard_fixture import EXPECTED, build_tree

    monkeypatch.chdir(tmp_path)
    build_tree(Path("runs"))
    build_leaderboard([Path("runs")], Path("out"), EXPECTED / "papers")
    for name in ("LEADERBOARD.md", "LEADERBOARD.csv", "LEADERBOARD.tex"):
        assert (Path("out") / name).read_bytes() == (EXPECTED / name).read_bytes(), name


def test_published_per_category_numbers_join_their_category_tables(tmp_path: Path) -> None:
    payload = results(dataset="mvtec", model="musc", protocol="musc")
    payload["categories"] = ["bottle", "cable"]
    payload["metrics"] = {c: metrics(0.5, 0.6) for c in ("bottle", "cable", "mean")}
    write_run(tmp_path / "run", payload)
    build_leaderboard([tmp_path], tmp_path)
    published = [r for r in csv_rows(tmp_path) if r["table"] == "published"]
    rows = [r for r in published if (r["model"], r["dataset"]) == ("musc", "mvtec")]
    by_category = {r["category"]: r for r in rows}
    assert set(by_category) == {"mean", "bottle", "cable"}
    assert float(by_category["bottle"]["pixel_ap_refined"]) == pytest.approx(0.8304)  # MuSc README, bottle
    assert float(by_category["mean"]["pro_compat_refined"]) == pytest.approx(0.9345)
    assert (
        len(load_papers()[[p.model for p in load_papers()].index("musc")].variants) == 32
    )  # 16 backbone settings x MVTec AD, VisA


def test_published_rows_sit_only_beside_runs_of_their_protocol(tmp_path: Path) -> None:
    write_run(tmp_path / "default", results(dataset="mvtec", model="anomalyclip"))
    write_run(tmp_path / "own", results(dataset="mvtec", model="anomalyclip", protocol="anomalyclip", seed=1))
    board = build_leaderboard([tmp_path], tmp_path)
    mains = {t.title: t for t in board.tables if t.kind == "main"}
    default, own = mains["mvtec"], mains["mvtec (protocol anomalyclip)"]
    assert not any("published" in row.labels[0] for row in default.rows)
    assert [row.labels[0] for row in own.rows if "published" in row.labels[0]] == [
        "AnomalyCLIP (published)",
        "WinCLIP (published)",
    ]
    assert "## mvtec (protocol anomalyclip)" in (tmp_path / "LEADERBOARD.md").read_text()
