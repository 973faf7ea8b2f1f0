"""Sweeps that resume and survive failures: deterministic job folders, job-level skip and
``failure.json``, a manifest of the expected jobs, and the leaderboard at the end of a multirun.

Job folders are ``<hydra.sweep.dir>/<job key>``, the key being the job's sorted overrides (Hydra's
``override_dirname``) made filename-safe, so re-running a sweep lands every job in its old folder
(see docs/experiments.md). Importing this module registers the resolvers (``anorefine.resolvers``):
Hydra imports it in every launcher's worker when it unpickles the callback.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from anorefine.leaderboard import build_leaderboard
from anorefine.nodes import resolved
from anorefine.resolvers import register_resolvers
from anorefine.run_folder import (
    FAILURE_FILE,
    LEADERBOARD_NAME,
    MANIFEST_FILE,
    config_hash,
    job_key,
    write_json_atomic,
)
from anorefine.run_folder import is_finished as has_results

log = logging.getLogger(__name__)

_BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__qualname__}"


register_resolvers()  # a launcher's worker imports this module before any job resolves its folder


def resolved_hash(cfg: DictConfig) -> str:
    """The config hash that ``results.json`` records for this job config."""
    return config_hash(resolved(cfg))


def is_finished(run_dir: Path, cfg: DictConfig) -> bool:
    """True when ``run_dir`` holds a readable results.json of this config (neutral settings aside)."""
    return has_results(run_dir, resolved_hash(cfg))


def write_failure(run_dir: Path, error: BaseException, cfg: DictConfig, overrides: list[str]) -> Path:
    """Record a failed job (error, traceback, overrides, config hash if it resolves) as ``failure.json``."""
    path = run_dir / FAILURE_FILE
    try:
        digest: str | None = resolved_hash(cfg)
    except Exception:  # the failure may be the config itself
        digest = None
    write_json_atomic(
        path,
        {
            "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(error)),
            "overrides": overrides,
            "config_hash": digest,
        },
    )
    return path


def clear_failure(run_dir: Path) -> None:
    """Forget an earlier failure of a job that has now finished."""
    (run_dir / FAILURE_FILE).unlink(missing_ok=True)


def expected_jobs(config: DictConfig) -> list[dict[str, Any]] | None:
    """Overrides and folder of every job the basic sweeper will launch (None for other sweepers)."""
    if config.hydra.sweeper.get("_target_") != _BASIC_SWEEPER:
        return None
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    parser = OverridesParser.create()
    (batch,) = BasicSweeper.split_arguments(
        parser.parse_overrides([*params, *config.hydra.overrides.task]), None
    )
    naming = config.hydra.job.config.override_dirname
    return [
        {
            "overrides": overrides,
            "dir": job_key(
                get_overrides_dirname(
                    parser.parse_overrides(overrides),
                    exclude_keys=list(naming.exclude_keys),
                    item_sep=naming.item_sep,
                    kv_sep=naming.kv_sep,
                )
            ),
        }
        for overrides in batch
    ]


class SweepCallback(Callback):
    """Writes the sweep manifest at the start of a multirun; at its end, writes the leaderboard of
    the sweep folder and exits with status 1 when any expected job failed or left no results."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = expected_jobs(config)
        if jobs is not None:
            sweep_dir = Path(config.hydra.sweep.dir)
            write_json_atomic(sweep_dir / MANIFEST_FILE, {"jobs": jobs})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        board = build_leaderboard([sweep_dir], sweep_dir)
        log.info("leaderboard: %s", sweep_dir / f"{LEADERBOARD_NAME}.md")
        problems = [p for p in board.problems if p.kind != "malformed"]
        if problems:
            for problem in problems:
                log.error("%s job %s: %s", problem.kind, problem.path, problem.detail)
            log.error(
                "%d job(s) of %s did not finish: listed in %s.md", len(problems), sweep_dir, LEADERBOARD_NAME
            )
            raise SystemExit(1)
