"""Leaderboard, step 3: LEADERBOARD.md, .csv and .tex from the tables."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from anorefine.leaderboard.tables import (
    COLUMNS,
    PAPER_DIR,
    SMOKE_MARK,
    SMOKE_NOTE,
    ZERO_NOTE,
    Leaderboard,
    collect,
    run_rows,
)
from anorefine.metrics.names import INTERVAL_KEYS
from anorefine.run_folder import LEADERBOARD_NAME

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
    *(f"{key}_delta_{part}" for key in INTERVAL_KEYS for part in ("low", "high", "contains_zero")),
    "status",
    "detail",
]


def csv_frame(board: Leaderboard) -> pd.DataFrame:
    """Every row with unrounded fractions; one line per run and category; problems as status rows."""
    records = []
    for table in board.tables:
        for row in table.rows:
            record = {"table": table.kind, "status": "ok", **row.record}
            for key, cell in row.cells.items():
                if cell is not None:
                    record[f"{key}_base"], record[f"{key}_refined"] = cell.base, cell.refined
                    record[f"{key}_refined_std"], record[f"{key}_delta"] = cell.std, cell.delta
                    if key in INTERVAL_KEYS:
                        record[f"{key}_delta_contains_zero"] = cell.contains_zero
            records.append(record)
    records += [{**record, "status": "ok"} for record in run_rows(board.runs)]
    records += [
        {
            "table": "problem",
            "status": "superseded" if p.superseded else p.kind,
            "path": str(p.path),
            "detail": f"{p.detail} ({p.superseded})" if p.superseded else p.detail,
        }
        for p in board.problems
    ]
    rows = [[record.get(name) for name in CSV_FIELDS] for record in records]
    return pd.DataFrame(rows, columns=CSV_FIELDS, dtype=object)  # object: ints stay ints beside blanks


def to_csv(board: Leaderboard, path: Path) -> None:
    """LEADERBOARD.csv: ``csv_frame`` with empty cells for missing values (CRLF rows, as csv writes)."""
    csv_frame(board).to_csv(path, index=False, na_rep="", lineterminator="\r\n")


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def to_markdown(board: Leaderboard, roots: list[Path]) -> str:
    """The tables as Markdown, then the problems."""
    lines = [
        "# Leaderboard",
        "",
        f"Built by `anorefine leaderboard` from {len(board.runs)} run(s) under "
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
    cells = [cell for table in board.tables for row in table.rows for cell in row.cells.values() if cell]
    if any(cell.contains_zero is not None for cell in cells):
        lines += ["", ZERO_NOTE]
    ablations = [table for table in board.tables if table.kind == "ablation"]
    for table in board.tables:
        if table is next(iter(ablations), None):
            lines += ["", "## Ablations", "", "Each sweep's runs pivoted by the settings they differ in; "
                      "the first row is the base map they all refine."]  # fmt: skip
        level = "##" if table.kind == "main" else "###"
        lines += ["", f"{level} {table.title}", ""]
        lines += _markdown_table(*table.grid())
        lines += [f"\n{note}" for note in table.notes]
    lines += ["", "## Failed, incomplete and missing jobs", ""]
    jobs = [p for p in board.open_problems if p.kind != "malformed"]
    lines += (
        _markdown_table(["status", "job", "detail"], [[p.kind, str(p.path), p.detail] for p in jobs])
        if jobs
        else ["None."]
    )
    superseded = len(board.problems) - len(board.open_problems)
    if superseded:
        lines += ["", f"{superseded} earlier failure(s) not listed: their config has finished since, or "
                  "their sweep no longer has the job (`--prune` deletes their folders)."]  # fmt: skip
    if board.pruned:
        lines += ["", f"Pruned {len(board.pruned)} superseded failed job folder(s)."]
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
    out = ["% Generated by anorefine leaderboard; needs \\usepackage{booktabs}."]
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
    out += [f"% {p.kind}: {p.path}: {p.detail}" for p in board.open_problems]
    return "\n".join(out) + "\n"


def build_leaderboard(
    roots: list[Path],
    out_dir: Path,
    paper_dir: Path = PAPER_DIR,
    published_only: bool = False,
    prune_failed: bool = False,
) -> Leaderboard:
    """Write ``LEADERBOARD.md``, ``.csv`` and ``.tex`` into ``out_dir`` from the runs under ``roots``
    (the options: ``collect``)."""
    board = collect(roots, paper_dir, published_only, prune_failed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{LEADERBOARD_NAME}.md").write_text(to_markdown(board, roots))
    (out_dir / f"{LEADERBOARD_NAME}.tex").write_text(to_latex(board))
    to_csv(board, out_dir / f"{LEADERBOARD_NAME}.csv")
    return board
