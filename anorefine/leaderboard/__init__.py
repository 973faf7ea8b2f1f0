"""Leaderboard tables from run folders: LEADERBOARD.md, .csv and .tex.

``scan`` finds the runs and problems under the roots, ``tables`` builds the tables from a pandas
frame of the runs' metrics, ``render`` writes the three files; ``build_leaderboard`` does all three.
"""

from anorefine.leaderboard.render import build_leaderboard, latex_escape, to_csv, to_latex, to_markdown
from anorefine.leaderboard.scan import Problem, Run, Scan, prune, scan
from anorefine.leaderboard.tables import (
    COLUMNS,
    PAPER_DIR,
    SMOKE_MARK,
    SMOKE_NOTE,
    ZERO_MARK,
    ZERO_NOTE,
    Cell,
    Leaderboard,
    PaperResult,
    Table,
    collect,
    load_papers,
)

__all__ = [
    "COLUMNS",
    "PAPER_DIR",
    "SMOKE_MARK",
    "SMOKE_NOTE",
    "ZERO_MARK",
    "ZERO_NOTE",
    "Cell",
    "Leaderboard",
    "PaperResult",
    "Problem",
    "Run",
    "Scan",
    "Table",
    "build_leaderboard",
    "collect",
    "latex_escape",
    "load_papers",
    "prune",
    "scan",
    "to_csv",
    "to_latex",
    "to_markdown",
]
