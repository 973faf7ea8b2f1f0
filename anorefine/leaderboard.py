"""Leaderboard tables from run folders: LEADERBOARD.md, .csv and .tex.

Every folder under the given roots that holds ``results.json`` is a run; ``failure.json`` marks a
failed job, a job folder without either is incomplete, a job the sweep manifest (``sweep.json``)
expects but that never started is missing, and an unreadable results.json is reported and skipped.

Rows merge the runs of one dataset whose overrides are equal apart from ``seed`` (and keys that do
not change numbers: logger, trainer, paths, data root); a cell is the refined map's value, mean ±
sample std over those runs, with Δ against the same runs' base map. Published numbers
(``conf/paper/*.yaml``) join the table of their dataset, which is shown even without runs. A sweep
whose jobs differ in keys other than dataset/model/refiner/curriculum/seed also gets an ablation
table pivoted by those keys.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

RESULTS_FILE = "results.json"
FAILURE_FILE = "failure.json"
#: The jobs a sweep will launch, written by ``anorefine.sweep.SweepCallback`` into the sweep folder.
MANIFEST_FILE = "sweep.json"
#: Hydra's record of a sweep, in the sweep folder.
SWEEP_CONFIG_FILE = "multirun.yaml"
OUTPUT_NAME = "LEADERBOARD"
PAPER_DIR = Path(__file__).resolve().parent.parent / "conf" / "paper"

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
#: Override keys a row shows in its own columns (or the seed it averages over); ``experiment/*``
#: presets only select models and methods, which rows show by name.
AXIS_KEYS = frozenset({"dataset", "model", "refiner", "curriculum", "experiment", "seed"})
#: Override keys that do not change numbers (prefixes).
NEUTRAL_KEYS = ("logger", "trainer", "paths", "dataset.root", "dataset.num_workers")
SMOKE_MARK = "†"
SMOKE_NOTE = f"{SMOKE_MARK} smoke-only run (tiny random CLIP weights): the numbers are not meaningful."


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``key=value`` overrides as a dict (``+``/``++``/``~`` prefixes dropped; deletions map to '~')."""
    parsed = {}
    for override in overrides:
        key, _, value = override.partition("=")
        parsed[key.lstrip("+~")] = value if not key.startswith("~") else "~"
    return parsed


def is_setting(key: str) -> bool:
    """True for an override key that identifies a row beyond dataset/model/refiner/curriculum/seed."""
    if key in AXIS_KEYS or key.startswith("experiment/"):
        return False
    return not any(key == p or key.startswith(f"{p}.") for p in NEUTRAL_KEYS)


@dataclass(frozen=True)
class Problem:
    """A job that left no usable results: failed, incomplete, missing, or malformed."""

    kind: str
    path: Path
    detail: str


@dataclass
class Run:
    """One finished run: its folder, the sweep it belongs to (if any) and its results.json."""

    path: Path
    sweep: Path | None
    results: dict[str, Any]

    @property
    def overrides(self) -> dict[str, str]:
        return parse_overrides(self.results.get("overrides", []))

    @property
    def method(self) -> str:
        """The refiner, with its curriculum when there is one (``ard+pgt``)."""
        curriculum = self.results.get("config", {}).get("curriculum", {}).get("name", "none")
        return self.results["refiner"] if curriculum == "none" else f"{self.results['refiner']}+{curriculum}"

    @property
    def settings(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v) for k, v in self.overrides.items() if is_setting(k)))

    def values(self, category: str, stage: str) -> dict[str, float | None]:
        return self.results["metrics"].get(category, {}).get(stage, {})


def validate_results(results: Any) -> None:
    """Raise ValueError naming what a results.json lacks."""
    if not isinstance(results, dict):
        raise ValueError("not a JSON object")
    for key in ("dataset", "model", "refiner", "metrics", "categories"):
        if key not in results:
            raise ValueError(f"no {key!r}")
    for category in [*results["categories"], "mean"]:
        for stage in ("base", "refined"):
            values = results["metrics"].get(category, {}).get(stage)
            if not isinstance(values, dict):
                raise ValueError(f"no metrics[{category!r}][{stage!r}]")
            for key, value in values.items():
                if value is not None and not isinstance(value, int | float):
                    raise ValueError(f"metrics[{category!r}][{stage!r}][{key!r}] is not a number")


@dataclass
class Scan:
    """What the roots hold: runs, problems, and the swept keys of each sweep folder."""

    runs: list[Run] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    swept: dict[Path, list[str]] = field(default_factory=dict)


def _sweep_of(path: Path, sweeps: list[Path]) -> Path | None:
    return next((s for s in sorted(sweeps, key=lambda s: -len(s.parts)) if s in path.parents), None)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def scan(roots: Iterable[Path]) -> Scan:
    """Walk the roots for runs, failed/incomplete jobs, malformed results and sweep manifests."""
    found = Scan()
    sweeps: list[Path] = []
    manifests: dict[Path, list[dict[str, Any]]] = {}
    overrides_of: dict[Path, list[dict[str, str]]] = {}
    runs: list[tuple[Path, dict[str, Any]]] = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames.sort()
            if SWEEP_CONFIG_FILE in filenames or MANIFEST_FILE in filenames:
                sweeps.append(here)
            if MANIFEST_FILE in filenames:
                try:
                    manifests[here] = list(_read_json(here / MANIFEST_FILE)["jobs"])
                except (OSError, ValueError, KeyError, TypeError) as error:
                    found.problems.append(Problem("malformed", here / MANIFEST_FILE, str(error)))
            if RESULTS_FILE in filenames:
                try:
                    results = _read_json(here / RESULTS_FILE)
                    validate_results(results)
                    runs.append((here, results))
                except (OSError, ValueError, AttributeError, TypeError) as error:
                    found.problems.append(
                        Problem("malformed", here / RESULTS_FILE, str(error) or "unreadable")
                    )
            elif FAILURE_FILE in filenames:
                try:
                    detail = str(_read_json(here / FAILURE_FILE)["error"]).splitlines()[0]
                except (OSError, ValueError, KeyError, TypeError, IndexError):
                    detail = "failure.json unreadable"
                found.problems.append(Problem("failed", here, detail))
            elif ".hydra" in dirnames or "categories" in dirnames:
                done = len(list((here / "categories").glob("*.json")))
                detail = f"no results.json (interrupted or still running; {done} categories finished)"
                found.problems.append(Problem("incomplete", here, detail))
            else:
                continue
            dirnames.clear()  # a job folder holds no further jobs
    for sweep, jobs in manifests.items():
        for job in jobs:
            if not (sweep / job["dir"]).exists():
                detail = "never started: " + " ".join(job["overrides"])
                found.problems.append(Problem("missing", sweep / job["dir"], detail))
        overrides_of[sweep] = [parse_overrides(job["overrides"]) for job in jobs]
    for path, results in runs:
        run = Run(path, _sweep_of(path, sweeps), results)
        found.runs.append(run)
        if run.sweep is not None and run.sweep not in manifests:
            overrides_of.setdefault(run.sweep, []).append(run.overrides)
    for sweep, jobs in overrides_of.items():
        keys = dict.fromkeys(k for job in jobs for k in job)
        found.swept[sweep] = [k for k in keys if len({job.get(k) for job in jobs}) > 1]
    return found


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


def aggregate(runs: list[Run], category: str, key: str) -> Cell | None:
    """Mean (and sample std when several) of a metric over runs; None if any run lacks it."""
    refined = [run.values(category, "refined").get(key) for run in runs]
    base = [run.values(category, "base").get(key) for run in runs]
    if any(v is None for v in [*refined, *base]):
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
        smoke = any(run.results.get("smoke_only") for run in runs)
        seeds = sorted({str(run.results.get("config", {}).get("seed", "")) for run in runs})
        row_labels = labels(key)
        if smoke:
            row_labels[0] += f" {SMOKE_MARK}"
        rows.append(
            Row(
                labels=row_labels,
                cells={k: aggregate(runs, category, k) for k in COLUMNS},
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


def dataset_tables(dataset: str, runs: list[Run], papers: list[PaperResult]) -> list[Table]:
    """The dataset's main table (category mean, paper rows last) and one table per category."""
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
    main = Table("main", dataset, columns, _run_rows(groups, "mean", labels, record), notes)
    for paper in papers:
        if dataset not in paper.datasets:
            continue
        main.notes += [f"{paper.name} (published claim): {claim}" for claim in paper.claims]
        values = paper.datasets[dataset]
        if values:
            main.rows.append(
                Row(
                    labels=[f"{paper.name} (published)", "none", paper.source],
                    cells={k: Cell(values[k] / 100) if k in values else None for k in COLUMNS},
                    record={
                        "table": "published",
                        "dataset": dataset,
                        "model": paper.model,
                        "method": "none",
                        "category": "mean",
                        "setting": "published",
                        "path": paper.source,
                    },
                )
            )
            main.notes.append(
                f"{paper.name}: " + "; ".join(f"{COLUMNS[k]} = {text}" for k, text in paper.metrics.items())
            )
    categories = sorted({c for run in runs for c in run.results["categories"]})
    if len(categories) < 2:  # the mean is the category
        return [main]
    per_category = [
        Table(
            "category",
            f"{dataset} / {category}",
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
    by_dataset = _group(found.runs, lambda r: r.results["dataset"])
    published = {dataset for paper in papers for dataset in paper.datasets}
    tables = []
    for dataset in sorted(set(by_dataset) | published):  # published numbers show even without runs
        tables += dataset_tables(dataset, by_dataset.get(dataset, []), papers)
    tables += ablation_tables(found)
    return Leaderboard(tables, found.problems, found.runs)


CSV_FIELDS = [
    "table",
    "dataset",
    "category",
    "model",
    "method",
    "setting",
    "runs",
    "seeds",
    "smoke_only",
    "path",
    *(f"{key}_{part}" for key in COLUMNS for part in ("base", "refined", "refined_std", "delta")),
    "status",
    "detail",
]


def to_csv(board: Leaderboard, path: Path) -> None:
    """Every row with unrounded fractions; one line per run and category; problems as status rows."""
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for table in board.tables:
            for row in table.rows:
                record = {"table": table.kind, "status": "ok", **row.record}
                for key, cell in row.cells.items():
                    if cell is not None:
                        record[f"{key}_base"], record[f"{key}_refined"] = cell.base, cell.refined
                        record[f"{key}_refined_std"], record[f"{key}_delta"] = cell.std, cell.delta
                writer.writerow(record)
        for record in run_rows(board.runs):
            writer.writerow({**record, "status": "ok"})
        for problem in board.problems:
            writer.writerow(
                {"table": "problem", "status": problem.kind, "path": problem.path, "detail": problem.detail}
            )


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def to_markdown(board: Leaderboard, roots: list[Path]) -> str:
    """The tables as Markdown, then the problems."""
    lines = [
        "# Leaderboard",
        "",
        f"Built by `python scripts/leaderboard.py` from {len(board.runs)} run(s) under "
        + ", ".join(f"`{root}`" for root in roots)
        + ".",
        "Cells: the refined map's value in percent, mean ± sample std over the row's runs (seeds), "
        "and in parentheses Δ against the same runs' base map. PRO-200 is the zero-shot papers' "
        "200-threshold PRO (`pro_compat`), not comparable with AUPRO (MVTec definition, FPR ≤ 0.3).",
    ]
    commits = Counter(str(run.results.get("git_commit")) for run in board.runs)
    if commits:
        lines.append(
            "Code: " + ", ".join(f"git commit `{c}` ({n} run(s))" for c, n in sorted(commits.items())) + "."
        )
    if any(row.record.get("smoke_only") for table in board.tables for row in table.rows):
        lines += ["", SMOKE_NOTE]
    for table in board.tables:
        level = "##" if table.kind == "main" else "###"
        title = f"Ablation: {table.title}" if table.kind == "ablation" else table.title
        lines += ["", f"{level} {title}", ""]
        lines += _markdown_table(*table.grid())
        lines += [f"\n{note}" for note in table.notes]
    lines += ["", "## Failed, incomplete and missing jobs", ""]
    jobs = [p for p in board.problems if p.kind != "malformed"]
    lines += (
        _markdown_table(["status", "job", "detail"], [[p.kind, str(p.path), p.detail] for p in jobs])
        if jobs
        else ["None."]
    )
    malformed = [p for p in board.problems if p.kind == "malformed"]
    if malformed:
        lines += ["", "## Skipped result files", ""]
        lines += _markdown_table(["file", "reason"], [[str(p.path), p.detail] for p in malformed])
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    SMOKE_MARK: r"$^\dagger$",
    "–": "--",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular cell."""
    return "".join(_LATEX_ESCAPES.get(char, char) for char in text)


def to_latex(board: Leaderboard) -> str:
    """One booktabs table per leaderboard table (requires ``\\usepackage{booktabs}``)."""
    out = ["% Generated by scripts/leaderboard.py; needs \\usepackage{booktabs}."]
    for table in board.tables:
        header, body = table.grid()
        labels = len(header) - 1 - len(COLUMNS)
        out += [
            "",
            "\\begin{table}[t]\\centering\\scriptsize",
            f"\\caption{{{latex_escape(table.title)}}}",
            "\\begin{tabular}{" + "l" * labels + "r" * (1 + len(COLUMNS)) + "}",
            "\\toprule",
            " & ".join(latex_escape(h) for h in header) + " \\\\",
            "\\midrule",
        ]
        out += [" & ".join(latex_escape(c) for c in cells) + " \\\\" for cells in body]
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    out += [f"% {p.kind}: {p.path}: {p.detail}" for p in board.problems]
    return "\n".join(out) + "\n"


def build_leaderboard(roots: list[Path], out_dir: Path, paper_dir: Path = PAPER_DIR) -> Leaderboard:
    """Write ``LEADERBOARD.md``, ``.csv`` and ``.tex`` into ``out_dir`` from the runs under ``roots``."""
    board = collect(roots, paper_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{OUTPUT_NAME}.md").write_text(to_markdown(board, roots))
    (out_dir / f"{OUTPUT_NAME}.tex").write_text(to_latex(board))
    to_csv(board, out_dir / f"{OUTPUT_NAME}.csv")
    return board
