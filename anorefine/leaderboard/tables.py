"""Leaderboard, step 2: the tables, from a pandas frame of every run's metrics.

A main table holds the runs of one dataset, protocol, category set and evaluation size: only those
share a mean. Its rows merge runs whose resolved configs are equal apart from the seed (and what
follows it) and the settings that change no number (``anorefine.run_folder.NEUTRAL_KEYS``); the
setting column names the resolved keys that differ between rows (a component's keys only between
runs of that component), so a preset's image size or coreset ratio shows and a default never does.
A cell is the refined map's value, mean ± sample std over the row's runs, with Δ against the same
runs' base map. Published means (``conf/paper/*.yaml``) join only a table over the dataset's full
category set under their protocol; published per-category numbers join their category's table; a
published-only table is made on request. A sweep whose runs differ in such settings also gets an
ablation table pivoted by them, with the base map's row first.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from anorefine.conf import CONF_DIR
from anorefine.datasets import dataset_class
from anorefine.errors import DataError
from anorefine.leaderboard.scan import Problem, Run, Scan, prune, scan
from anorefine.metrics.names import INTERVAL_KEYS
from anorefine.results import CONTAINS_ZERO_MARK, refines
from anorefine.run_folder import is_neutral

PAPER_DIR = CONF_DIR / "paper"

#: Table columns: metric key -> header.
COLUMNS = {
    "image_auroc": "I-AUROC",
    "image_ap": "I-AP",
    "pixel_auroc": "P-AUROC",
    "pixel_ap": "P-AP",
    "aupro": "AUPRO",
    "pro_compat": "PRO-200",
    "pixel_f1_max": "F1-max",
    "pixel_iou_max": "IoU-max",
    "boundary_f1": "B-F1",
}
SMOKE_MARK = "†"
SMOKE_NOTE = f"{SMOKE_MARK} smoke-only run (random weights): the numbers are not meaningful."
#: After a Δ whose bootstrap interval contains 0 (``anorefine.results.CONTAINS_ZERO_MARK``).
ZERO_MARK = CONTAINS_ZERO_MARK
ZERO_NOTE = (
    f"{ZERO_MARK} after Δ: its paired bootstrap interval over the test images (95% by default) contains 0, "
    "in at least one of the row's runs (runs without intervals, e.g. results format 2, add no mark). The "
    "interval resamples test images, not training: seeds vary only across a row's runs (± std)."
)


def full_categories(dataset: str) -> tuple[str, ...]:
    """A dataset's full category set (its class's ``official_categories``; empty for a dataset that
    is not, or no longer, a conf/dataset option): a published mean is compared only with a run over
    all of them."""
    try:
        return dataset_class(dataset).official_categories
    except DataError:
        return ()


#: Resolved-config keys that place a run (its table, its row's columns), never shown as settings.
PLACING_KEYS = frozenset(
    {"seed", "mode", "dataset.name", "dataset.categories", "dataset.image_size", "eval.protocol",
     "model.name", "model.image_size", "refiner.name", "curriculum.name"}
)  # fmt: skip
#: A component's keys are compared only between runs of the same component (group -> whose name).
COMPONENT_OF = {"model": "model", "prepare": "model", "refiner": "refiner", "curriculum": "curriculum"}


@dataclass(frozen=True)
class Cell:
    """One table cell: the refined value (mean over runs), its std, Δ against base, and the base."""

    refined: float
    std: float | None = None
    delta: float | None = None
    base: float | None = None
    #: whether a bootstrap interval of Δ contains 0 (any of the runs'); None: no run has one
    contains_zero: bool | None = None

    def text(self) -> str:
        """Percent with two decimals: ``refined [± std] [(Δ)[~]]`` (``~``: ``contains_zero``)."""
        out = f"{100 * self.refined:.2f}"
        if self.std is not None:
            out += f" ± {100 * self.std:.2f}"
        if self.delta is not None:
            out += f" ({100 * self.delta:+.2f})"
            if self.contains_zero:
                out += ZERO_MARK
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
            found = run.interval(category, key) if key in INTERVAL_KEYS else None
            record[f"{key}_zero"] = None if found is None else bool(found.get("contains_zero"))
        records.append(record)
    return pd.DataFrame.from_records(
        records, columns=[f"{k}_{s}" for k in COLUMNS for s in ("base", "refined", "zero")]
    )


def aggregate(frame: pd.DataFrame, key: str) -> Cell | None:
    """Mean (and sample std when several) of one metric over the frame's runs; None if any lacks it."""
    refined = frame[f"{key}_refined"].astype(object).tolist()
    base = frame[f"{key}_base"].astype(object).tolist()
    if any(v is None or v != v for v in [*refined, *base]):  # None, or NaN from a missing key
        return None
    zeros = [v for v in frame[f"{key}_zero"].astype(object).tolist() if isinstance(v, bool)]
    return Cell(
        refined=statistics.fmean(refined),
        std=statistics.stdev(refined) if len(refined) > 1 else None,
        delta=statistics.fmean(r - b for r, b in zip(refined, base, strict=True)),
        base=statistics.fmean(base),
        contains_zero=any(zeros) if zeros else None,
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
        paper: PaperResult = OmegaConf.to_object(node)  # type: ignore[assignment]  # the structured schema's
        for dataset, values in paper.datasets.items():
            unknown = set(values) - set(paper.metrics) | set(paper.metrics) - set(COLUMNS)
            if unknown:
                raise ValueError(f"{path}: {dataset} has metric keys {sorted(unknown)} without a definition")
        papers.append(paper)
    return papers


def _natural(value: Any) -> Any:
    """Sort key that puts numbers in numeric order (4 before 13) and before text; settings
    (tuples of key-value pairs) by their values in that order."""
    if isinstance(value, tuple):
        return [(key, _natural(text)) for key, text in value]
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
        if digest is None:
            distinct.append(run)
        elif digest not in seen:
            distinct.append(run)
            seen.add(digest)
    return distinct


def _group(runs: Iterable[Run], key: Any) -> dict[Any, list[Run]]:
    groups: dict[Any, list[Run]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


def flat_settings(node: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A resolved config as dotted key -> text, without the settings that change no number."""
    flat = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if is_neutral(path):
            continue
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{path}."))
        else:
            flat[path] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


def differing_settings(runs: list[Run]) -> dict[int, tuple[tuple[str, str], ...]]:
    """Per run (by ``id``): the resolved settings that differ between ``runs``.

    Placing keys, the seed and keys that follow it (equal to it in every run that has them) are left
    out; a key of a component (``model.*``, ``refiner.*``, ...) counts only where runs of that
    component differ in it.
    """
    flats = {id(run): flat_settings(run.results.get("config", {})) for run in runs}

    def scope(flat: dict[str, str], key: str) -> str | None:
        group = COMPONENT_OF.get(key.split(".")[0])
        return flat.get(f"{group}.name") if group else None

    values: dict[tuple[str, str | None], set[str]] = {}
    for flat in flats.values():
        for key in flat:
            values.setdefault((key, scope(flat, key)), set())
    for flat in flats.values():
        for key, where in list(values):
            if where == scope(flat, key):
                values[key, where].add(flat.get(key, "–"))
    seeded = {  # a key that follows the seed in every run that has it (a refiner=none run has no order_seed)
        k for k, _ in values if k != "seed" and all(f[k] == f.get("seed") for f in flats.values() if k in f)
    }
    shown = {(k, w) for (k, w), seen in values.items() if len(seen) > 1 and k not in PLACING_KEYS | seeded}
    return {
        run_id: tuple(sorted((k, flat.get(k, "–")) for k, w in shown if w == scope(flat, k)))
        for run_id, flat in flats.items()
    }


def _setting_text(settings: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings) or "–"


def eval_size(run: Run) -> str:
    """The size maps were scored at: ``256²``, or ``original`` (each image's own size)."""
    resolution = run.results.get("eval_resolution") or {}
    if resolution.get("mode") == "original":
        return "original"
    size = (resolution.get("size") or [None])[0] or run.results.get("config", {}).get("dataset", {}).get(
        "image_size"
    )
    return f"{size}²" if size else "?"


def _run_rows(
    groups: dict[Any, list[Run]],
    category: str,
    labels: Callable[[Any], list[str]],
    record: Callable[[Any], dict[str, Any]],
    stage: str = "refined",
) -> list[Row]:
    """One row per group of runs: ``labels(key)`` and ``record(key)`` describe the group. With
    ``stage="base"`` the cells hold the base map's values (no Δ)."""
    rows = []
    for key, group in sorted(groups.items(), key=lambda item: [_natural(part) for part in item[0]]):
        runs = _distinct(group)
        frame = metric_frame(runs, category)
        if stage == "base":
            frame = frame.assign(**{f"{k}_refined": frame[f"{k}_base"] for k in COLUMNS})
        smoke = any(run.results.get("smoke_only") for run in runs)
        seeds = sorted({str(run.results.get("config", {}).get("seed", "")) for run in runs})
        row_labels = labels(key)
        if smoke:
            row_labels[0] += f" {SMOKE_MARK}"
        cells = {k: aggregate(frame, k) for k in COLUMNS}
        if stage == "base":
            cells = {k: Cell(c.refined, c.std, None, c.base) if c else None for k, c in cells.items()}
        rows.append(
            Row(
                labels=row_labels,
                cells=cells,
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


def protocol_of(run: Run) -> str:
    """The evaluation protocol a run followed (``default`` for runs that predate the field)."""
    return str(run.results.get("protocol") or "default")


@dataclass(frozen=True)
class Scope:
    """What runs must share to share a mean: dataset, protocol, category set and evaluation size."""

    dataset: str
    protocol: str
    categories: tuple[str, ...]
    size: str

    @staticmethod
    def of(run: Run) -> Scope:
        return Scope(
            run.results["dataset"], protocol_of(run), tuple(run.results["categories"]), eval_size(run)
        )

    @property
    def is_full(self) -> bool:
        """True when the categories are the benchmark's full set (published means compare with it)."""
        return sorted(self.categories) == sorted(full_categories(self.dataset))

    def title(self, alone: bool) -> str:
        """``dataset [(protocol P)]``, with the categories and size unless it is its dataset's only table."""
        title = self.dataset if self.protocol == "default" else f"{self.dataset} (protocol {self.protocol})"
        if alone:
            return title
        kinds = "all categories" if self.is_full else ", ".join(self.categories)
        return f"{title}: {kinds}; {self.size}"


def size_notes(groups: dict[Any, list[Run]], labels: Callable[[Any], list[str]]) -> list[str]:
    """Per row whose runs all have a per-size breakdown (results format 3): one note with the pixel AP
    of each defect-size bin, refined and (Δ), mean over categories (``breakdown["mean"]``) and runs."""
    lines = []
    for key, group in sorted(groups.items(), key=lambda item: [_natural(part) for part in item[0]]):
        runs = _distinct(group)
        sizes = [(run.results.get("breakdown") or {}).get("mean", {}).get("sizes") for run in runs]
        if not all(sizes):
            continue
        cells = []
        for name in sizes[0]:
            entries = [found.get(name) for found in sizes]
            if not all(e and e["refined"].get("pixel_ap") is not None for e in entries):
                continue
            refined = statistics.fmean(e["refined"]["pixel_ap"] for e in entries)
            delta = statistics.fmean(e["refined"]["pixel_ap"] - e["base"]["pixel_ap"] for e in entries)
            cells.append(f"{entries[0]['label']} {Cell(refined, delta=delta).text()}")
        if cells:
            name = " / ".join(label for label in labels(key)[:2])
            lines.append(f"P-AP by defect size (region area), {name}: " + "; ".join(cells) + ".")
    return lines


def dataset_tables(scope: Scope, runs: list[Run], papers: list[PaperResult], title: str) -> list[Table]:
    """The main table of one scope (category mean, paper rows last) and one table per category."""
    settings = differing_settings(runs)
    groups = _group(
        runs, lambda run: (run.results["model"], refines(run.results), run.method, settings[id(run)])
    )
    notes = [] if runs else ["No runs of this dataset under the given roots: published numbers only."]
    if settings and any(settings.values()):
        notes.append("Setting: the resolved config keys in which the rows differ (seeds averaged).")

    def labels(key: tuple[Any, ...]) -> list[str]:
        return [key[0], key[2], _setting_text(key[3])]

    def record(key: tuple[Any, ...]) -> dict[str, Any]:
        return {"dataset": scope.dataset, "model": key[0], "method": key[2], "setting": _setting_text(key[3])}

    columns = ["model", "refiner", "setting"]
    main = Table("main", title, columns, _run_rows(groups, "mean", labels, record), notes)
    main.notes += size_notes(groups, labels)
    for paper in papers:
        if scope.dataset not in paper.datasets:
            continue
        main.notes += [f"{paper.name} (published claim): {claim}" for claim in paper.claims]
        values = paper.datasets[scope.dataset]
        (only,) = scope.categories if len(scope.categories) == 1 else (None,)
        category_values = paper.per_category.get(scope.dataset, {}).get(only) if only else None
        if values and (scope.is_full or not runs):
            main.rows.append(published_row(paper, scope.dataset, "mean", values))
            main.notes.append(
                f"{paper.name}: " + "; ".join(f"{COLUMNS[k]} = {text}" for k, text in paper.metrics.items())
            )
        elif category_values:  # a one-category table: that category's published numbers
            main.rows.append(published_row(paper, scope.dataset, str(only), category_values))
        elif values:
            main.notes.append(f"{paper.name}'s published mean covers every category: not beside this subset.")
    if len(scope.categories) < 2:  # the mean is the category
        return [main]
    per_category = []
    for category in scope.categories:
        table = Table(
            "category", f"{title} / {category}", columns, _run_rows(groups, category, labels, record)
        )
        for paper in papers:
            published = paper.per_category.get(scope.dataset, {}).get(category)
            if published:
                table.rows.append(published_row(paper, scope.dataset, category, published))
        per_category.append(table)
    return [main, *per_category]


def ablation_tables(scan_result: Scan) -> list[Table]:
    """Per sweep whose runs differ in settings: the base map's row, then rows pivoted by those keys."""
    tables = []
    for sweep in sorted({run.sweep for run in scan_result.runs if run.sweep is not None}):
        runs = [run for run in scan_result.runs if run.sweep == sweep]
        settings = differing_settings(runs)
        pivot = sorted({key for found in settings.values() for key, _ in found})
        if not pivot:
            continue

        def key_of(run: Run, pivot: list[str] = pivot, settings: dict = settings) -> tuple[str, ...]:
            values = dict(settings[id(run)])
            return (
                run.results["dataset"],
                run.results["model"],
                run.method,
                *(values.get(k, "–") for k in pivot),
            )

        def record(key: tuple[str, ...], pivot: list[str] = pivot) -> dict[str, Any]:
            setting = ", ".join(f"{k}={v}" for k, v in zip(pivot, key[3:], strict=True))
            return {"dataset": key[0], "model": key[1], "method": key[2], "setting": setting}

        def base_labels(key: tuple[str, ...], width: int = len(pivot)) -> list[str]:
            return [key[0], key[1], "none (base map)", *["–"] * width]

        def base_record(key: tuple[str, ...]) -> dict[str, Any]:
            return {"dataset": key[0], "model": key[1], "method": "none", "setting": "base map"}

        bases = _group(runs, lambda run: (run.results["dataset"], run.results["model"]))
        rows = _run_rows(bases, "mean", base_labels, base_record, stage="base")
        rows += _run_rows(_group(runs, key_of), "mean", list, record)
        tables.append(Table("ablation", sweep.name, ["dataset", "model", "refiner", *pivot], rows))
    return tables


def run_rows(runs: list[Run]) -> Iterator[dict[str, Any]]:
    """CSV records of every run and category with the exact numbers of its results.json."""
    settings = differing_settings(runs)
    for run in sorted(runs, key=lambda r: str(r.path)):
        for category in [*run.results["categories"], "mean"]:
            record = {
                "table": "run",
                "dataset": run.results["dataset"],
                "category": category,
                "model": run.results["model"],
                "method": run.method,
                "setting": _setting_text(settings[id(run)]),
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
            for key in INTERVAL_KEYS:
                found = run.interval(category, key) or {}
                for part in ("low", "high", "contains_zero"):
                    record[f"{key}_delta_{part}"] = found.get(part)
            yield record


@dataclass
class Leaderboard:
    """The tables and problems of a set of run folders."""

    tables: list[Table]
    problems: list[Problem]
    runs: list[Run]
    pruned: list[Path] = field(default_factory=list)

    @property
    def open_problems(self) -> list[Problem]:
        """Every problem but the failures a later run or a changed sweep has superseded."""
        return [problem for problem in self.problems if problem.superseded is None]


def collect(
    roots: Iterable[Path],
    paper_dir: Path = PAPER_DIR,
    published_only: bool = False,
    prune_failed: bool = False,
) -> Leaderboard:
    """Scan the roots and build every table (``published_only``: also tables of published numbers
    alone, for datasets without runs; ``prune_failed``: delete superseded failed jobs first)."""
    found = scan(roots)
    pruned = prune(found) if prune_failed else []
    papers = load_papers(paper_dir)
    by_scope = _group(found.runs, Scope.of)
    if published_only:
        ran = {(scope.dataset, scope.protocol) for scope in by_scope}
        for paper in papers:
            for dataset in paper.datasets:
                if (dataset, paper.protocol) not in ran:
                    by_scope.setdefault(Scope(dataset, paper.protocol, full_categories(dataset), "?"), [])
    per_dataset = _group(by_scope, lambda scope: (scope.dataset, scope.protocol))
    tables = []
    for scope in sorted(
        by_scope, key=lambda s: (s.dataset, s.protocol != "default", s.protocol, s.categories, s.size)
    ):
        own = [
            paper for paper in papers if paper.protocol == scope.protocol
        ]  # compared only under their protocol
        alone = len(per_dataset[scope.dataset, scope.protocol]) == 1
        tables += dataset_tables(scope, by_scope[scope], own, scope.title(alone))
    tables += ablation_tables(found)
    return Leaderboard(tables, found.problems, found.runs, pruned)
