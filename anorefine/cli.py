"""The body of ``train.py``: Hydra config in, one run out; bad input exits with one line.

A job whose folder already holds results.json for the same resolved config is skipped. A failing
job writes ``failure.json`` (error and traceback); in a multirun it then returns so the sweep goes
on, and ``anorefine.sweep.SweepCallback`` reports it at the end. Under DDP only rank zero writes.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from anorefine.errors import AnorefineError
from anorefine.run import is_multiprocess, is_rank_zero, run_experiment
from anorefine.sweep import clear_failure, is_finished, write_failure

log = logging.getLogger(__name__)
DDP_IN_MULTIRUN = (
    "trainer=ddp in a multirun needs its processes started by the cluster, one per GPU "
    "(hydra/launcher=submitit_slurm with hydra.launcher.tasks_per_node equal to gpus_per_node): "
    "Lightning would start the others by re-running the whole sweep. Otherwise run one GPU per job"
)


def check_ddp_launch(cfg: DictConfig, mode: RunMode | None) -> None:
    """Refuse DDP in a multirun whose jobs would have to start their own processes."""
    if mode != RunMode.MULTIRUN or not is_multiprocess(cfg):
        return
    if not ("LOCAL_RANK" in os.environ or SLURMEnvironment.detect()):
        raise AnorefineError(DDP_IN_MULTIRUN)


def train(cfg: DictConfig) -> None:
    """Run the experiment the composed config describes, in Hydra's run directory."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    if is_finished(run_dir, cfg):
        print(f"skipped: {run_dir} already holds results.json for this config", flush=True)
        return
    try:
        check_ddp_launch(cfg, hydra_cfg.mode)
        run_experiment(cfg, run_dir, overrides)
    except Exception as error:
        failure = write_failure(run_dir, error, cfg, overrides) if is_rank_zero() else "not written"
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error("job failed (%s): %s; the sweep goes on", failure, error)
            return
        if isinstance(error, AnorefineError):
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        raise
    if is_rank_zero():
        clear_failure(run_dir)
