"""A ``train.py`` job in a child process, with its wall time and peak resident memory: how the scripts
that measure whole runs (scripts/rehearse.py, scripts/hires.py) start them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from anorefine.stages import maxrss_mb

#: Lines of a failed job's log kept in its record.
TAIL_LINES = 8
#: Runs a command and writes its peak RSS (``ru_maxrss``) to argv[1]: a small parent, since a child's
#: ``ru_maxrss`` starts at the resident size of the process it was forked from (here, one with torch).
LAUNCHER = (
    "import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:]); "
    "_, status, usage = os.wait4(child.pid, 0); open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); "
    "sys.exit(os.waitstatus_to_exitcode(status) % 256)"
)
#: The train.py entry point of this package's checkout or installation.
TRAIN = [sys.executable, "-m", "anorefine", "train"]


def run_job(
    overrides: list[str], run_dir: Path, log_name: str = "job.log", cwd: Path | None = None
) -> dict[str, Any]:
    """Run ``anorefine train`` with ``overrides`` in a child process (in ``cwd``), its log in ``run_dir``;
    returns its status, wall time, peak RSS, the 1-minute load at its start and, on failure, the last
    lines of its log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path, rss_path = run_dir / log_name, run_dir / f"{Path(log_name).stem}.maxrss"
    command = [sys.executable, "-c", LAUNCHER, str(rss_path), *TRAIN, *overrides]
    load, started = os.getloadavg()[0], time.perf_counter()
    with log_path.open("w") as log:
        done = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=False)
    record: dict[str, Any] = {"wall_s": time.perf_counter() - started, "load_at_start": load}
    if rss_path.exists():
        record["peak_rss_mb"] = maxrss_mb(int(rss_path.read_text()))
    if done.returncode == 0:
        return {"status": "done", **record}
    tail = log_path.read_text(errors="replace").strip().splitlines()[-TAIL_LINES:]
    return {"status": f"failed (exit {done.returncode})", "error": tail, **record}
