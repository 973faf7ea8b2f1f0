"""``make transfer``: run the leave-one-kind-out transfer matrix and write its table into docs/transfer.md.

python scripts/transfer.py                      # the sweep (train.py -m experiment=transfer), then the table
python scripts/transfer.py --table-only         # the table from the runs already under --sweep-dir
python scripts/transfer.py -- refiner.width=16  # extra overrides for every job of the sweep

The sweep resumes (finished jobs are skipped), so an interrupted run continues where it stopped.
The table replaces what stands between the two markers of docs/transfer.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anorefine.results import cpu_model, git_commit
from anorefine.transfer_matrix import read_cells, render

BEGIN, END = "<!-- transfer:begin -->", "<!-- transfer:end -->"


def write_section(doc: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the text between the markers ``begin`` and ``end`` of ``doc`` (appended with them when
    absent)."""
    text = doc.read_text() if doc.is_file() else ""
    block = f"{begin}\n{section}{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sweep-dir", type=Path, default=REPO / "outputs" / "multirun" / "transfer")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "transfer.md")
    parser.add_argument("--table-only", action="store_true", help="do not run the sweep")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every job (after --)")
    args = parser.parse_args(argv)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    if not args.table_only:
        command = [sys.executable, str(REPO / "train.py"), "-m", "experiment=transfer",
                   f"hydra.sweep.dir={args.sweep_dir}", *args.overrides]  # fmt: skip
        print("running:", " ".join(command[1:]), flush=True)
        done = subprocess.run(command, cwd=REPO, check=False)
        if done.returncode != 0:
            print(f"error: the sweep failed (exit {done.returncode}); see {args.sweep_dir}", file=sys.stderr)
            return done.returncode
    cells, commits = read_cells(args.sweep_dir)
    if not cells:
        print(f"error: no transfer runs under {args.sweep_dir}: run without --table-only", file=sys.stderr)
        return 2
    context = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": ", ".join(sorted(c[:7] for c in commits)) or str(git_commit()),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, no GPU",
        "load average at start": f"{load_before:.1f}",
    }
    if not args.table_only:
        context["wall time"] = f"{(time.perf_counter() - started) / 60:.0f} min"
    if args.overrides:
        context["overrides"] = "`" + " ".join(args.overrides) + "`"
    write_section(args.doc, render(cells, context))
    print(f"{len(cells)} cell(s): {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
