"""The prepared GPU bench runs end to end (on the CPU here) and rewrites only its own section."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_bench_fills_its_section_and_keeps_the_cpu_ones(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    output.write_text("# Benchmarks\n\nthe CPU tables\n\n## GPU\n\nan older GPU section\n")
    command = [sys.executable, "-m", "anorefine", "bench", "--gpu", "--device", "cpu", "--quick"]
    command += ["--output", str(output)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    text = output.read_text()
    assert text.startswith("# Benchmarks\n\nthe CPU tables\n\n## GPU\n") and "older" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| what")]
    assert len(rows) == 6 and not any("Error" in row for row in rows), rows
    refiners = [row for row in rows if "refiner on PatchCore" in row]
    assert all(re.search(r"the refiner's own time: \d+\.\d\d× the detector's", row) for row in refiners)
    metrics = next(row for row in rows if row.startswith("| metrics engine"))
    assert float(re.search(r"values differ by ([0-9.e+-]+)", metrics).group(1)) == 0.0  # cpu vs cpu


def test_without_a_gpu_it_refuses_before_any_work(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal cannot happen")
    output = tmp_path / "benchmarks.md"
    command = [sys.executable, "-m", "anorefine", "bench", "--gpu", "--output", str(output)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no CUDA device is visible" in done.stderr and not output.exists()
