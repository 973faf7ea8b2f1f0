"""Leaderboard, step 2: the tables, from a pandas frame of every run's metrics.

Rows merge the runs of one dataset whose overrides are equal apart from ``seed`` (and the settings
that change no number, ``anorefine.run_folder.NEUTRAL_KEYS``); a cell is the refined map's value,
mean ± sample std over those runs, with Δ against the same runs' base map. Published numbers
(``conf/paper/*.yaml``) join the table of their dataset, which is shown even without runs. A sweep
whose jobs differ in keys other than dataset/model/refiner/curriculum/seed also gets an ablation
table pivoted by those keys.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from anorefine.leaderboard.scan import Problem, Run, Scan, is_setting, scan

PAPER_DIR = Path(__file__).resolve().parents[2] / "conf" / "paper"

#: Table columns: metric key -> header.
COLUMNS = {
    "image_auroc": "I-AUROC",
    "image_ap": "I-AP",
    "pixel_auroc": "P-AUROC",
    "pixel_ap": "P-AP",
    "aupro": "AUPRO",
    "pro_compat": "PRO-200",
    "pixel_f1_max": "F1-max",
}
SMOKE_MARK = "†"
SMOKE_NOTE = f"{SMOKE_MARK} smoke-only run (tiny random CLIP weights): the numbers are not meaningful."


@dataclass(frozen=True)
class Cell:
    """One table cell: the refined value (mean over runs), its std, Δ against base, and the base."""

    refined: float
    std: float | None = None
    delta: float | None = None
    base: float | None = None

    def text(self) -> str:
        """Percent with two decimals: ``refined [± std] [(Δ)]``."""
        out = f"{100 * self.refined:.2f}"
        if self.std is not None:
            out += f" ± {100 * self.std:.2f}"
        if self.delta is not None:
            out += f" ({100 * self.delta:+.2f})"
        return out


def metric_frame(runs: list[Run], category: str) -> pd.DataFrame:
    """One row per run: the base and refined value of every column metric in ``category``
    (``None`` where the run lacks it), kept as Python floats so that means are exact."""
    records = []
    for run in runs:
        record: dict[str, Any] = {}
        for key in COLUMNS:
            record[f"{key}_base"] = run.values(category, "base").get(key)
            record[f"{key}_refined"] = run.values(category, "refined").get(key)
        records.append(record)
    return pd.DataFrame.from_records(
        records, columns=[f"{k}_{s}" for k in COLUMNS for s in ("base", "refined")]
    )


def aggregate(frame: pd.DataFrame, key: str) -> Cell | None:
    """Mean (and sample std when several) of one metric over the frame's runs; None if any lacks it."""
    refined = frame[f"{key}_refined"].astype(object).tolist()
    base = frame[f"{key}_base"].astype(object).tolist()
    if any(v is None or v != v for v in [*refined, *base]):  # None, or NaN from a missing key
        return None
    return Cell(
        refined=statistics.fmean(refined),
        std=statistics.stdev(refined) if len(refined) > 1 else None,
        delta=statistics.fmean(r - b for r, b in zip(refined, base, strict=True)),
        base=statistics.fmean(base),
    )


@dataclass
class Row:
    """A table row: its label columns, cells per metric key, and its CSV fields."""

    labels: list[str]
    cells: dict[str, Cell | None]
    record: dict[str, Any]


@dataclass
class Table:
    """A titled table of rows under the metric columns."""

    kind: str
    title: str
    label_columns: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    def grid(self) -> tuple[list[str], list[list[str]]]:
        """Header and cell texts; label columns empty ("–") in every row are left out."""
        keep = [i for i in range(len(self.label_columns)) if any(r.labels[i] != "–" for r in self.rows)]
        header = [*(self.label_columns[i] for i in keep), "runs", *COLUMNS.values()]
        body = [
            [
                *(row.labels[i] for i in keep),
                str(row.record.get("runs", "")),
                *(cell.text() if cell else "–" for cell in row.cells.values()),
            ]
            for row in self.rows
        ]
        return header, body


@dataclass
class PaperResult:
    """Schema of ``conf/paper/*.yaml``: published numbers in percent, keyed by our metric names."""

    name: str
    model: str
    source: str
    #: our metric key -> the paper's metric and its definition (what makes the numbers comparable)
    metrics: dict[str, str]
    #: dataset -> our metric key -> published value in percent (empty: only claims for it)
    datasets: dict[str, dict[str, float]]
    #: published claims without a table of numbers, noted under the tables of ``datasets``
    claims: list[str] = field(default_factory=list)
    #: dataset -> category -> our metric key -> value: rows of the per-category tables
    per_category: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: other published settings (e.g. backbones): ``setting``, ``dataset``, ``values``; recorded, not shown
    variants: list[dict[str, Any]] = field(default_factory=list)
    #: the evaluation the numbers were made under (conf/protocol); rows join only runs of that protocol
    protocol: str = "default"


def published_row(paper: PaperResult, dataset: str, category: str, values: dict[str, float]) -> Row:
    """A table row of published numbers (percent in the file, fractions in the row)."""
    return Row(
        labels=[f"{paper.name} (published)", "none", paper.source],
        cells={k: Cell(values[k] / 100) if k in values else None for k in COLUMNS},
        record={
            "table": "published",
            "dataset": dataset,
            "model": paper.model,
            "method": "none",
            "category": category,
            "setting": "published",
            "path": paper.source,
        },
    )


def load_papers(paper_dir: Path = PAPER_DIR) -> list[PaperResult]:
    """Every published reference in ``paper_dir``, validated against :class:`PaperResult`."""
    papers = []
    for path in sorted(paper_dir.glob("*.yaml")):
        node = OmegaConf.merge(OmegaConf.structured(PaperResult), OmegaConf.load(path))
        paper: PaperResult = OmegaConf.to_object(node)  # type: ignore[assignment]
        for dataset, values in paper.datasets.items():
            unknown = set(values) - set(paper.metrics) | set(paper.metrics) - set(COLUMNS)
            if unknown:
                raise ValueError(f"{path}: {dataset} has metric keys {sorted(unknown)} without a definition")
        papers.append(paper)
    return papers


def _natural(value: Any) -> tuple[int, float, str]:
    """Sort key that puts numbers in numeric order (4 before 13) and before text."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _distinct(runs: list[Run]) -> list[Run]:
    """The runs without repeats of one config (same ``config_hash``, e.g. found in two sweeps)."""
    seen: set[str] = set()
    distinct = []
    for run in runs:
        digest = run.results.get("config_hash")
        if digest is None or digest not in seen:
            distinct.append(run)
            seen.add(digest)
    return distinct


def _group(runs: Iterable[Run], key: Any) -> dict[Any, list[Run]]:
    groups: dict[Any, list[Run]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


def _setting_text(settings: tuple[tuple[str, str], ...], common: set[tuple[str, str]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings if (k, v) not in common) or "–"


def _run_rows(
    groups: dict[Any, list[Run]],
    category: str,
    labels: Callable[[Any], list[str]],
    record: Callable[[Any], dict[str, Any]],
) -> list[Row]:
    """One row per group of runs: ``labels(key)`` and ``record(key)`` describe the group."""
    rows = []
    for key, group in sorted(groups.items(), key=lambda item: [_natural(part) for part in item[0]]):
        runs = _distinct(group)
        frame = metric_frame(runs, category)
        smoke = any(run.results.get("smoke_only") for run in runs)
        seeds = sorted({str(run.results.get("config", {}).get("seed", "")) for run in runs})
        row_labels = labels(key)
        if smoke:
            row_labels[0] += f" {SMOKE_MARK}"
        rows.append(
            Row(
                labels=row_labels,
                cells={k: aggregate(frame, k) for k in COLUMNS},
                record={
                    **record(key),
                    "category": category,
                    "runs": len(runs),
                    "seeds": " ".join(seeds),
                    "smoke_only": smoke,
                    "path": " ".join(str(run.path) for run in runs),
                },
            )
        )
    return rows


def _identity(run: Run) -> tuple[Any, ...]:
    """Row key: model, then the base map's row (``none``) before refiners, then the settings."""
    return (run.results["model"], run.method != "none", run.method, run.settings)


def protocol_of(run: Run) -> str:
    """The evaluation protocol a run followed (``default`` for runs that predate the field)."""
    return str(run.results.get("protocol") or "default")


def dataset_tables(
    dataset: str, runs: list[Run], papers: list[PaperResult], protocol: str = "default"
) -> list[Table]:
    """The main table of one dataset under one protocol (category mean, paper rows last) and one
    table per category; titled by the dataset, with the protocol when it is not the default."""
    title = dataset if protocol == "default" else f"{dataset} (protocol {protocol})"
    groups = _group(runs, _identity)
    all_settings = [set(key[3]) for key in groups]
    common = set.intersection(*all_settings) if all_settings else set()
    notes = [f"Common settings: {_setting_text(tuple(sorted(common)), set())}."] if common else []
    if not runs:
        notes.append("No runs of this dataset under the given roots: published numbers only.")

    def labels(key: tuple[Any, ...]) -> list[str]:
        return [key[0], key[2], _setting_text(key[3], common)]

    def record(key: tuple[Any, ...]) -> dict[str, Any]:
        return {
            "dataset": dataset,
            "model": key[0],
            "method": key[2],
            "setting": _setting_text(key[3], set()),
        }

    columns = ["model", "refiner", "setting"]
    main = Table("main", title, columns, _run_rows(groups, "mean", labels, record), notes)
    for paper in papers:
        if dataset not in paper.datasets:
            continue
        main.notes += [f"{paper.name} (published claim): {claim}" for claim in paper.claims]
        values = paper.datasets[dataset]
        if values:
            main.rows.append(published_row(paper, dataset, "mean", values))
            main.notes.append(
                f"{paper.name}: " + "; ".join(f"{COLUMNS[k]} = {text}" for k, text in paper.metrics.items())
            )
    categories = sorted({c for run in runs for c in run.results["categories"]})
    if len(categories) < 2:  # the mean is the category
        return [main]
    per_category = [
        Table(
            "category",
            f"{title} / {category}",
            columns,
            _run_rows(
                _group((r for r in runs if category in r.results["categories"]), _identity),
                category,
                labels,
                record,
            ),
        )
        for category in categories
    ]
    for table, category in zip(per_category, categories, strict=True):
        for paper in papers:
            values = paper.per_category.get(dataset, {}).get(category)
            if values:
                table.rows.append(published_row(paper, dataset, category, values))
    return [main, *per_category]


def ablation_tables(scan_result: Scan) -> list[Table]:
    """Per sweep with swept settings: rows pivoted by those keys, seeds averaged."""
    tables = []
    for sweep, keys in sorted(scan_result.swept.items()):
        pivot = [k for k in keys if is_setting(k)]
        runs = [run for run in scan_result.runs if run.sweep == sweep]
        if not pivot or not runs:
            continue

        def key_of(run: Run, pivot: list[str] = pivot) -> tuple[str, ...]:
            values = run.overrides
            return (
                run.results["dataset"],
                run.results["model"],
                run.method,
                *(values.get(k, "–") for k in pivot),
            )

        def record(key: tuple[str, ...], pivot: list[str] = pivot) -> dict[str, Any]:
            setting = ", ".join(f"{k}={v}" for k, v in zip(pivot, key[3:], strict=True))
            return {"dataset": key[0], "model": key[1], "method": key[2], "setting": setting}

        rows = _run_rows(_group(runs, key_of), "mean", list, record)
        tables.append(Table("ablation", sweep.name, ["dataset", "model", "refiner", *pivot], rows))
    return tables


def run_rows(runs: list[Run]) -> Iterator[dict[str, Any]]:
    """CSV records of every run and category with the exact numbers of its results.json."""
    for run in sorted(runs, key=lambda r: str(r.path)):
        for category in [*run.results["categories"], "mean"]:
            record = {
                "table": "run",
                "dataset": run.results["dataset"],
                "category": category,
                "model": run.results["model"],
                "method": run.method,
                "setting": _setting_text(run.settings, set()),
                "runs": 1,
                "seeds": str(run.results.get("config", {}).get("seed", "")),
                "smoke_only": bool(run.results.get("smoke_only")),
                "path": str(run.path),
            }
            for key in COLUMNS:
                base, refined = (
                    run.values(category, "base").get(key),
                    run.values(category, "refined").get(key),
                )
                record[f"{key}_base"], record[f"{key}_refined"] = base, refined
                record[f"{key}_delta"] = None if base is None or refined is None else refined - base
            yield record


@dataclass
class Leaderboard:
    """The tables and problems of a set of run folders."""

    tables: list[Table]
    problems: list[Problem]
    runs: list[Run]


def collect(roots: Iterable[Path], paper_dir: Path = PAPER_DIR) -> Leaderboard:
    """Scan the roots and build every table."""
    found = scan(roots)
    papers = load_papers(paper_dir)
    by_table = _group(found.runs, lambda r: (r.results["dataset"], protocol_of(r)))
    published = {(dataset, paper.protocol) for paper in papers for dataset in paper.datasets}
    tables = []
    for dataset, protocol in sorted(set(by_table) | published):  # published numbers show even without runs
        own = [paper for paper in papers if paper.protocol == protocol]  # compared only under their protocol
        tables += dataset_tables(dataset, by_table.get((dataset, protocol), []), own, protocol)
    tables += ablation_tables(found)
    return Leaderboard(tables, found.problems, found.runs)
