"""``anorefine leaderboard``: regenerate the leaderboard tables from run folders.

anorefine leaderboard outputs/                  # writes outputs/LEADERBOARD.{md,csv,tex}
anorefine leaderboard runs_a/ runs_b/ --out DIR  # several roots, tables into DIR
anorefine leaderboard outputs/ --prune           # first delete failed jobs superseded since
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anorefine.leaderboard.render import build_leaderboard
from anorefine.leaderboard.tables import PAPER_DIR
from anorefine.run_folder import LEADERBOARD_NAME


def main(argv: list[str] | None = None) -> int:
    """Build the leaderboard; print where it is and what did not finish. Exit 2 on a missing root."""
    parser = argparse.ArgumentParser(
        prog="anorefine leaderboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("roots", nargs="+", type=Path, help="folders searched for run folders (results.json)")
    parser.add_argument("--out", type=Path, help="where to write the tables (default: the first root)")
    parser.add_argument("--papers", type=Path, default=PAPER_DIR, help="published reference numbers (yaml)")
    parser.add_argument(
        "--published", action="store_true", help="also tables of published numbers for datasets without runs"
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete the folders of failed jobs whose config has finished since or that their sweep dropped",
    )
    args = parser.parse_args(argv)
    absent = [root for root in args.roots if not root.is_dir()]
    if absent:
        print(f"error: {absent[0]} is not a folder", file=sys.stderr)
        return 2
    out = args.out or args.roots[0]
    board = build_leaderboard(args.roots, out, args.papers, args.published, args.prune)
    print(f"{len(board.runs)} run(s): {out / LEADERBOARD_NAME}.md, .csv, .tex")
    for path in board.pruned:
        print(f"pruned: {path} (a superseded failed job)")
    for problem in board.open_problems:
        print(f"{problem.kind}: {problem.path}: {problem.detail}")
    return 0
