"""Leaderboard, step 1: find the runs and the problems under the roots.

Every folder under the given roots that holds ``results.json`` is a run; ``failure.json`` marks a
failed job, a job folder without either is incomplete, a job the sweep manifest (``sweep.json``)
expects but that never started is missing, and an unreadable results.json is reported and skipped.
A failed job is superseded when a run of the same config has since finished, or when its sweep's
manifest no longer lists it (the sweep was changed): ``prune`` deletes such job folders.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anorefine.results import run_method
from anorefine.run_folder import (
    FAILURE_FILE,
    MANIFEST_FILE,
    RESULTS_FILE,
    SWEEP_CONFIG_FILE,
    validate_results,
)


@dataclass(frozen=True)
class Problem:
    """A job that left no usable results: failed, incomplete, missing, or malformed."""

    kind: str
    path: Path
    detail: str
    #: for a failed job: why it no longer matters (a later run of its config, or gone from its sweep)
    superseded: str | None = None


@dataclass
class Run:
    """One finished run: its folder, the sweep it belongs to (if any) and its results.json."""

    path: Path
    sweep: Path | None
    results: dict[str, Any]

    @property
    def method(self) -> str:
        """The refiner, with the curriculum that trains it (``ard+pgt``): ``run_method``."""
        return run_method(self.results)

    def values(self, category: str, stage: str) -> dict[str, float | None]:
        return self.results["metrics"].get(category, {}).get(stage, {})

    def interval(self, category: str, key: str) -> dict[str, Any] | None:
        """The bootstrap interval of ``key``'s Δ in ``category`` (or ``"mean"``); ``None`` for a run
        without one (format 2, ``refiner=none``, ``eval.bootstrap.replicates=0``)."""
        entry = (self.results.get("intervals") or {}).get(category) or {}
        return (entry.get("delta") or {}).get(key)


@dataclass
class Scan:
    """What the roots hold: runs and problems (superseded failures included, marked)."""

    runs: list[Run] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _sweep_of(path: Path, sweeps: list[Path]) -> Path | None:
    return next((s for s in sorted(sweeps, key=lambda s: -len(s.parts)) if s in path.parents), None)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def scan(roots: Iterable[Path]) -> Scan:
    """Walk the roots for runs, failed/incomplete jobs, malformed results and sweep manifests."""
    found = Scan()
    sweeps: list[Path] = []
    manifests: dict[Path, list[dict[str, Any]]] = {}
    runs: list[tuple[Path, dict[str, Any]]] = []
    failed_hash: dict[Path, str | None] = {}
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
                    failure = _read_json(here / FAILURE_FILE)
                    detail = str(failure["error"]).splitlines()[0]
                    failed_hash[here] = failure.get("config_hash")
                except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
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
    found.runs = [Run(path, _sweep_of(path, sweeps), results) for path, results in runs]
    finished = {run.results.get("config_hash"): run.path for run in found.runs}
    for index, problem in enumerate(found.problems):
        if problem.kind == "failed":
            found.problems[index] = _with_supersession(
                problem, failed_hash.get(problem.path), finished, manifests
            )
    return found


def _with_supersession(
    problem: Problem,
    digest: str | None,
    finished: dict[Any, Path],
    manifests: dict[Path, list[dict[str, Any]]],
) -> Problem:
    """A failed job, marked superseded when its config finished since or its sweep no longer lists it."""
    if digest is not None and digest in finished:
        return Problem(problem.kind, problem.path, problem.detail, f"finished since in {finished[digest]}")
    sweep = _sweep_of(problem.path, list(manifests))
    if sweep is not None and problem.path.relative_to(sweep).as_posix() not in {
        j["dir"] for j in manifests[sweep]
    }:
        return Problem(
            problem.kind, problem.path, problem.detail, f"no longer a job of {sweep / MANIFEST_FILE}"
        )
    return problem


def prune(found: Scan) -> list[Path]:
    """Delete the folders of superseded failed jobs (they hold no results.json); returns them."""
    removed = []
    for problem in [p for p in found.problems if p.superseded is not None]:
        if (problem.path / FAILURE_FILE).is_file() and not (problem.path / RESULTS_FILE).exists():
            shutil.rmtree(problem.path)
            removed.append(problem.path)
    found.problems = [problem for problem in found.problems if problem.path not in removed]
    return removed
