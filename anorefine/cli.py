"""The body of ``train.py``: Hydra config in, one run out; bad input exits with one line.

A job whose folder already holds results.json for the same resolved config is skipped. A failing
job writes ``failure.json`` (error and traceback); in a multirun it then returns so the sweep goes
on, and ``anorefine.sweep.SweepCallback`` reports it at the end.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from anorefine.errors import AnorefineError
from anorefine.run import run_experiment
from anorefine.sweep import clear_failure, is_finished, write_failure

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> None:
    """Run the experiment the composed config describes, in Hydra's run directory."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    if is_finished(run_dir, cfg):
        print(f"skipped: {run_dir} already holds results.json for this config", flush=True)
        return
    try:
        run_experiment(cfg, run_dir, overrides)
    except Exception as error:
        failure = write_failure(run_dir, error, cfg, overrides)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error("job failed (%s): %s; the sweep goes on", failure, error)
            return
        if isinstance(error, AnorefineError):
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        raise
    clear_failure(run_dir)
