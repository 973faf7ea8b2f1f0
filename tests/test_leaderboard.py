"""Leaderboard tables from synthetic run folders: numbers, seeds, ablations, problems, papers, CLI."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

import pytest
from leaderboard_fixture import interval_records, resolved_config

from anorefine.data import MVTEC_CATEGORIES
from anorefine.leaderboard import COLUMNS, build_leaderboard, latex_escape, load_papers
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
        "config": resolved_config(dataset, model, refiner, seed, overrides),
        "overrides": [f"model={model}", f"refiner={refiner}", f"seed={seed}", *overrides],
        **extra,
    }


def over_all_mvtec(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` over MVTec AD's 15 categories (a published mean is compared only with such a run)."""
    categories = list(MVTEC_CATEGORIES)
    mean = payload["metrics"]["mean"]
    return {**payload, "categories": categories, "metrics": {**dict.fromkeys(categories, mean), "mean": mean}}


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


def test_a_key_that_follows_the_seed_merges_seeds_even_where_other_runs_lack_it(tmp_path: Path) -> None:
    """A seed=0,1,2 sweep over none and ARD + PGT: PGT's order_seed follows the seed (none runs have no
    such key), so each refiner is one row of 3 runs, not one row per seed."""
    for seed in (0, 1, 2):
        write_run(tmp_path / f"none{seed}", results(seed=seed, value=0.5))
        ard = results(
            refiner="ard",
            seed=seed,
            value=0.5,
            delta=0.01 * seed,
            overrides=(f"curriculum.order_seed={seed}",),
        )
        write_run(tmp_path / f"ard{seed}", ard)
    build_leaderboard([tmp_path], tmp_path)
    rows = [row for row in csv_rows(tmp_path) if row["table"] == "main"]
    assert sorted((row["method"], row["runs"], row["seeds"]) for row in rows) == [
        ("ard+pgt", "3", "0 1 2"),
        ("none", "3", "0 1 2"),
    ]
    (ard,) = [row for row in rows if row["method"] == "ard+pgt"]
    assert float(ard["pixel_ap_delta"]) == pytest.approx(0.01)


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
    base, *refined = ablation[0].rows
    assert base.labels[2:] == ["none (base map)", "–"] and base.cells["pixel_ap"].delta is None
    assert [row.labels[-1] for row in refined] == ["4", "13"]  # numeric order
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
    write_run(tmp_path / "run", over_all_mvtec(results(dataset="mvtec", model="anomalyclip")))
    build_leaderboard([tmp_path], tmp_path, published_only=True)
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
    build_leaderboard([tmp_path], tmp_path)  # published-only tables on request only
    assert not [row for row in csv_rows(tmp_path) if row["table"] == "published"]  # the run: no protocol


def test_a_published_mean_is_not_set_beside_a_subset_of_its_categories(tmp_path: Path) -> None:
    write_run(tmp_path / "run", results(dataset="mvtec", model="patchcore", protocol="mvtec"))  # a, b
    board = build_leaderboard([tmp_path], tmp_path)
    (main,) = [table for table in board.tables if table.kind == "main"]
    assert [row.labels[0] for row in main.rows] == ["patchcore"]
    assert "PatchCore's published mean covers every category: not beside this subset." in main.notes


def test_every_paper_file_is_valid() -> None:
    papers = load_papers()
    assert {paper.model for paper in papers} >= {"anomalyclip", "winclip", "patchcore", "ard", "musc"}
    for paper in papers:
        assert paper.source and paper.metrics and paper.datasets
        assert paper.claims or all(paper.datasets.values())  # numbers, or a claim to note


def test_helpers() -> None:
    assert latex_escape("pixel_ap 50% ± 1") == r"pixel\_ap 50\% $\pm$ 1"


def test_cli_writes_the_three_files_and_reports_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from anorefine.leaderboard import command as cli

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
    """The fixture tree's LEADERBOARD.{md,csv,tex} equal the recorded ones (re-recorded when the tables
    change on purpose: resolved-config settings, scopes, IoU-max and B-F1 columns, ablation base rows)."""
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
    assert set(by_category) == {"bottle", "cable"}  # the mean covers all 15 categories: not beside two
    assert float(by_category["bottle"]["pixel_ap_refined"]) == pytest.approx(0.8304)  # MuSc README, bottle
    assert (
        len(load_papers()[[p.model for p in load_papers()].index("musc")].variants) == 32
    )  # 16 backbone settings x MVTec AD, VisA


def test_a_one_category_table_gets_that_category_s_published_row(tmp_path: Path) -> None:
    """A run over one category (a rehearsal's) sits beside the paper's numbers for that category under
    its protocol; a paper with means only says why it is not there."""
    payload = results(dataset="mvtec", model="musc", protocol="musc")
    payload["categories"] = ["grid"]
    payload["metrics"] = {c: metrics(0.5, 0.6) for c in ("grid", "mean")}
    write_run(tmp_path / "run", payload)
    board = build_leaderboard([tmp_path], tmp_path)
    (main,) = [t for t in board.tables if t.kind == "main"]
    published = [row for row in main.rows if row.record.get("table") == "published"]
    assert [row.record["category"] for row in published] == ["grid"]
    assert published[0].cells["pixel_ap"].refined == pytest.approx(0.3824)  # MuSc README, grid
    other = results(dataset="mvtec", model="anomalyclip", protocol="anomalyclip")
    other["categories"] = ["grid"]
    other["metrics"] = {c: metrics(0.5, 0.6) for c in ("grid", "mean")}
    write_run(tmp_path / "other", other)
    board = build_leaderboard([tmp_path], tmp_path)
    notes = [note for t in board.tables if t.kind == "main" for note in t.notes]
    assert "AnomalyCLIP's published mean covers every category: not beside this subset." in notes


def test_published_rows_sit_only_beside_runs_of_their_protocol(tmp_path: Path) -> None:
    write_run(tmp_path / "default", over_all_mvtec(results(dataset="mvtec", model="anomalyclip")))
    own = results(dataset="mvtec", model="anomalyclip", protocol="anomalyclip", seed=1)
    write_run(tmp_path / "own", over_all_mvtec(own))
    board = build_leaderboard([tmp_path], tmp_path)
    mains = {t.title: t for t in board.tables if t.kind == "main"}
    default, own = mains["mvtec"], mains["mvtec (protocol anomalyclip)"]
    assert not any("published" in row.labels[0] for row in default.rows)
    assert [row.labels[0] for row in own.rows if "published" in row.labels[0]] == [
        "AnomalyCLIP (published)",
        "WinCLIP (published)",
    ]
    assert "## mvtec (protocol anomalyclip)" in (tmp_path / "LEADERBOARD.md").read_text()


def test_settings_come_from_the_resolved_config_not_the_command_line(tmp_path: Path) -> None:
    preset = results(overrides=("experiment=small_coreset",), value=0.4)
    preset["config"]["model"]["coreset_ratio"] = 0.01  # set by the preset: no override names it
    write_run(tmp_path / "preset", preset)
    explicit_default = results(overrides=("model.coreset_ratio=0.1",), seed=1, value=0.6)
    write_run(tmp_path / "default_spelt_out", explicit_default)
    plain = results(seed=2, value=0.8)
    plain["config"]["model"]["coreset_ratio"] = "0.1"
    write_run(tmp_path / "plain", plain)
    build_leaderboard([tmp_path], tmp_path)
    main = {row["setting"]: row for row in csv_rows(tmp_path) if row["table"] == "main"}
    assert set(main) == {"model.coreset_ratio=0.01", "model.coreset_ratio=0.1"}
    assert main["model.coreset_ratio=0.1"]["runs"] == "2"  # the default, spelt out or not: one row


def test_runs_that_differ_only_by_a_presets_image_size_never_share_a_mean(tmp_path: Path) -> None:
    for size, value in ((256, 0.5), (512, 0.7)):
        payload = results(overrides=(f"experiment=size{size}",), value=value)
        payload["config"]["dataset"]["image_size"] = payload["config"]["model"]["image_size"] = size
        payload["eval_resolution"] = {"mode": "input", "size": [size, size]}
        write_run(tmp_path / f"s{size}", payload)
    write_run(tmp_path / "subset", {**results(value=0.9), "categories": ["a"]})
    board = build_leaderboard([tmp_path], tmp_path)
    mains = {table.title: table for table in board.tables if table.kind == "main"}
    assert set(mains) == {"demo: a, b; 256²", "demo: a, b; 512²", "demo: a; 256²"}
    assert [len(table.rows) for table in mains.values()] == [1, 1, 1]
    assert mains["demo: a, b; 512²"].rows[0].cells["pixel_ap"].refined == pytest.approx(0.7)


def test_ablations_sit_under_their_own_heading_with_the_new_columns(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun" / "ablation_width"
    for width in (8, 16):
        write_run(sweep / f"w{width}", results(refiner="ard", overrides=(f"refiner.width={width}",)))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")  # what marks a sweep folder
    write_run(tmp_path / "visa_run", results(dataset="visa"))
    build_leaderboard([tmp_path], tmp_path)
    markdown = (tmp_path / "LEADERBOARD.md").read_text()
    assert markdown.index("## visa") < markdown.index("## Ablations") < markdown.index("### ablation_width")
    assert "| IoU-max | B-F1 |" in markdown


def test_failures_superseded_by_a_later_run_are_not_listed_and_prune_deletes_them(tmp_path: Path) -> None:
    write_run(tmp_path / "retry", results(config_hash="abc"))
    failure = {"error": "RuntimeError: out of memory", "config_hash": "abc"}
    write_json_atomic(tmp_path / "first_try" / "failure.json", failure)
    write_json_atomic(tmp_path / "still_failing" / "failure.json", {**failure, "config_hash": "other"})
    sweep = tmp_path / "multirun" / "sweep"
    write_json_atomic(sweep / "sweep.json", {"jobs": [{"overrides": ["seed=0"], "dir": "kept"}]})
    write_run(sweep / "kept", results(config_hash="kept"))
    write_json_atomic(sweep / "dropped" / "failure.json", {**failure, "config_hash": "gone"})
    board = build_leaderboard([tmp_path], tmp_path)
    assert [p.path.name for p in board.open_problems] == ["still_failing"]
    assert {p.path.name for p in board.problems if p.superseded} == {"first_try", "dropped"}
    markdown = (tmp_path / "LEADERBOARD.md").read_text()
    assert "still_failing" in markdown and "first_try" not in markdown
    assert "2 earlier failure(s) not listed" in markdown
    board = build_leaderboard([tmp_path], tmp_path, prune_failed=True)
    assert sorted(path.name for path in board.pruned) == ["dropped", "first_try"]
    assert not (tmp_path / "first_try").exists() and (tmp_path / "still_failing").exists()
    assert (tmp_path / "retry" / "results.json").is_file()


def test_a_delta_whose_interval_contains_zero_in_any_run_is_marked(tmp_path: Path) -> None:
    seeds = {0: {"mean": ("pixel_ap",)}, 1: {"a": ("aupro",)}, 2: {}}
    for seed, zero in seeds.items():
        payload = results(
            refiner="ard",
            seed=seed,
            value=0.5,
            delta=0.02,
            format=3,
            intervals=interval_records(["a", "b"], zero),
        )
        write_run(tmp_path / f"ard{seed}", payload)
    write_run(tmp_path / "old", results(refiner="f2pad", delta=0.03, format=2))  # no intervals at all
    write_run(tmp_path / "none", results(format=3, intervals=None))  # refiner=none: Δ = 0, no interval
    board = build_leaderboard([tmp_path], tmp_path)
    main = {row.labels[1]: row for table in board.tables if table.kind == "main" for row in table.rows}
    ard = main["ard+pgt"].cells
    assert ard["pixel_ap"].contains_zero is True and ard["pixel_ap"].text() == "52.00 ± 0.00 (+2.00)~"
    assert ard["aupro"].contains_zero is False and not ard["aupro"].text().endswith("~")  # a, not the mean
    assert ard["pro_compat"].contains_zero is None  # no interval for PRO-200
    for row in (main["f2pad"], main["none"]):  # format 2 and refiner=none: no mark, no crash
        assert all(cell.contains_zero is None and "~" not in cell.text() for cell in row.cells.values())
    by_category = {
        (table.title, row.labels[1]): row
        for table in board.tables
        if table.kind == "category"
        for row in table.rows
    }
    assert by_category["demo / a", "ard+pgt"].cells["aupro"].text().endswith("~")
    assert not by_category["demo / a", "ard+pgt"].cells["pixel_ap"].text().endswith("~")
    markdown = (tmp_path / "LEADERBOARD.md").read_text()
    assert (
        "| 52.00 ± 0.00 (+2.00)~ |" in markdown
        and "interval over the test images (95% by default) contains 0" in markdown
    )
    rows = csv_rows(tmp_path)
    (merged,) = [r for r in rows if r["table"] == "main" and r["method"] == "ard+pgt"]
    assert (merged["pixel_ap_delta_contains_zero"], merged["aupro_delta_contains_zero"]) == ("True", "False")
    (old,) = [r for r in rows if r["table"] == "main" and r["method"] == "f2pad"]
    assert old["pixel_ap_delta_contains_zero"] == ""
    run = next(
        r for r in rows if r["table"] == "run" and r["path"].endswith("ard0") and r["category"] == "mean"
    )
    assert (float(run["pixel_ap_delta_low"]), run["pixel_ap_delta_contains_zero"]) == (-0.004, "True")
    assert r"(+2.00)\textasciitilde{}" in (tmp_path / "LEADERBOARD.tex").read_text()


def test_without_any_interval_the_legend_is_left_out(tmp_path: Path) -> None:
    write_run(tmp_path / "old", results(refiner="ard", delta=0.02, format=2))
    build_leaderboard([tmp_path], tmp_path)
    assert "contains 0" not in (tmp_path / "LEADERBOARD.md").read_text()


def test_rows_with_a_size_breakdown_get_a_note_of_pixel_ap_per_size_bin(tmp_path: Path) -> None:
    def sizes(base: float, delta: float) -> dict[str, Any]:
        def entry(label: str, shift: float) -> dict[str, Any]:
            keys = ("pixel_auroc", "pixel_ap", "aupro")
            values = {
                "base": dict.fromkeys(keys, base + shift),
                "refined": dict.fromkeys(keys, base + shift + delta),
            }
            return {"label": label, "categories": ["a", "b"], "regions": 4, "pixels": 40, **values}

        return {"mean": {"kinds": {}, "sizes": {"small": entry("<0.1%", 0.0), "large": entry(">1%", 0.3)}}}

    for seed, delta in ((0, 0.02), (1, 0.04)):
        write_run(tmp_path / f"ard{seed}", results(refiner="ard", seed=seed, breakdown=sizes(0.1, delta)))
    write_run(tmp_path / "old", results(refiner="f2pad"))  # format 2: no breakdown, no note
    board = build_leaderboard([tmp_path], tmp_path)
    (main,) = [table for table in board.tables if table.kind == "main"]
    notes = [note for note in main.notes if note.startswith("P-AP by defect size")]
    assert notes == [
        "P-AP by defect size (region area), patchcore / ard+pgt: <0.1% 13.00 (+3.00); >1% 43.00 (+3.00)."
    ]
    assert notes[0] in (tmp_path / "LEADERBOARD.md").read_text()
