"""Leaderboard, step 1: find the runs and the problems under the roots.

Every folder under the given roots that holds ``results.json`` is a run; ``failure.json`` marks a
failed job, a job folder without either is incomplete, a job the sweep manifest (``sweep.json``)
expects but that never started is missing, and an unreadable results.json is reported and skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anorefine.run_folder import (
    FAILURE_FILE,
    MANIFEST_FILE,
    RESULTS_FILE,
    SWEEP_CONFIG_FILE,
    is_neutral,
    validate_results,
)

#: Override keys a row shows in its own columns (or the seed it averages over); ``experiment/*``
#: presets only select models and methods, which rows show by name.
AXIS_KEYS = frozenset({"dataset", "model", "refiner", "curriculum", "experiment", "seed"})


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
    return not is_neutral(key)


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
